package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ProbeLinePrefix starts the line with the probe command to try; the
// playground's test looks for it.
const ProbeLinePrefix = "  try it:  "

// iceServer is one entry of iceServers.json, as browsers take it.
type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// printNextSteps waits for the static sample credential's iceServers.json
// (written by the operator once the relay is ready and the TurnServer
// lists its URLs) and prints it with a probe command. If it does not come,
// it prints what it can: the TurnServer's URLs and the credential Secret.
func printNextSteps(ctx context.Context, c *cluster, o options, kubeconfig string) {
	var servers []iceServer
	err := poll(ctx, o.timeout, "iceServers.json in Secret "+sampleStatic, func() (bool, error) {
		s := &corev1.Secret{}
		if err := c.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: sampleStatic}, s); err != nil {
			return false, nil //nolint:nilerr // not there yet
		}
		if json.Unmarshal(s.Data["iceServers.json"], &servers) != nil || len(servers) == 0 || len(servers[0].URLs) == 0 {
			return false, nil
		}
		return true, nil
	})

	if ctx.Err() != nil {
		return // stopping already
	}
	fmt.Println()
	fmt.Println("turnpike is running on a local control plane. Ctrl-C stops everything.")
	fmt.Printf("  kubectl:   export KUBECONFIG=%s; kubectl get turnservers,turncredentials,pods\n", kubeconfig)
	if err != nil {
		printFallback(ctx, c, err)
		return
	}
	pretty, _ := json.MarshalIndent(servers, "  ", "  ")
	fmt.Printf("  iceServers (Secret %s/%s, key iceServers.json), for new RTCPeerConnection({iceServers}):\n  %s\n", namespace, sampleStatic, pretty)
	fmt.Println(ProbeLinePrefix + probeCommand(o.turnpike, servers[0]))
	fmt.Println()
}

// probeCommand is a turnpike probe command for the first turn: UDP URL.
func probeCommand(turnpike string, s iceServer) string {
	url := s.URLs[0]
	for _, u := range s.URLs {
		if strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "transport=udp") {
			url = u
			break
		}
	}
	cmd := fmt.Sprintf("%s probe '%s' --username '%s' --password '%s'", turnpike, url, s.Username, s.Credential)
	if strings.HasPrefix(url, "turns:") {
		cmd += " --insecure"
	}
	return cmd
}

func printFallback(ctx context.Context, c *cluster, err error) {
	fmt.Printf("  no iceServers.json yet (%v)\n", err)
	if ts, err := c.turnServer(ctx); err == nil {
		fmt.Printf("  TurnServer %s URLs: %s\n", ts.Name, strings.Join(ts.Status.URLs, " "))
		for _, cond := range ts.Status.Conditions {
			fmt.Printf("    %s=%s %s: %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
	}
	fmt.Printf("  once Secret %s has a password:  turnpike probe 'turn:%s:3478?transport=udp' --username sfu --password \"$(kubectl get secret %s -o jsonpath='{.data.password}' | base64 -d)\"\n",
		sampleStatic, c.hostIP, sampleStatic)
}
