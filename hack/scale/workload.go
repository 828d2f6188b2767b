package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The workload is written as unstructured objects with only long-standing
// fields, so that the same benchmark drives an operator built from another
// tree whose API has moved on.
const serverName = "scale"

var (
	turnServerGVK     = schema.GroupVersionKind{Group: "turnpike.dev", Version: "v1alpha1", Kind: "TurnServer"}
	turnCredentialGVK = schema.GroupVersionKind{Group: "turnpike.dev", Version: "v1alpha1", Kind: "TurnCredential"}
)

// turnServer relays UDP and TCP on 3478 on every node labelled for relays.
func turnServer() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": serverName, "namespace": workloadNS},
		"spec": map[string]any{
			"realm": "scale.turnpike.test",
			"listeners": []any{
				map[string]any{"name": "udp", "protocol": "UDP", "port": int64(3478)},
				map[string]any{"name": "tcp", "protocol": "TCP", "port": int64(3478)},
			},
			"relayPortRange": map[string]any{"min": int64(49152), "max": int64(65535)},
			"placement":      map[string]any{"nodeSelector": map[string]any{relayLabel: "true"}},
		},
	}}
	u.SetGroupVersionKind(turnServerGVK)
	return u
}

// credentialName is TurnCredential i's name.
func credentialName(i int) string { return fmt.Sprintf("cred-%03d", i) }

// turnCredential i: even ones static users, odd ones shared secrets.
func turnCredential(i int) *unstructured.Unstructured {
	spec := map[string]any{"turnServerRef": map[string]any{"name": serverName}, "type": "SharedSecret"}
	if i%2 == 0 {
		spec["type"], spec["username"] = "Static", fmt.Sprintf("user-%03d", i)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": credentialName(i), "namespace": workloadNS},
		"spec":     spec,
	}}
	u.SetGroupVersionKind(turnCredentialGVK)
	return u
}

// serverState is what the benchmark reads of the TurnServer's status.
type serverState struct {
	Ready        bool
	ReadyNodes   int64
	DesiredNodes int64
}

func readServer(ctx context.Context, c client.Client) (serverState, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(turnServerGVK)
	if err := c.Get(ctx, client.ObjectKey{Namespace: workloadNS, Name: serverName}, u); err != nil {
		return serverState{}, err
	}
	var s serverState
	s.ReadyNodes, _, _ = unstructured.NestedInt64(u.Object, "status", "readyNodes")
	s.DesiredNodes, _, _ = unstructured.NestedInt64(u.Object, "status", "desiredNodes")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
			s.Ready = true
		}
	}
	return s, nil
}

// waitServerReady polls the TurnServer until it is Ready with readyNodes
// == want, and returns when it first saw that. It gives up (false) once
// neither the TurnServer nor progress (ready relay pods) has moved for
// stall: how long a rollout takes depends on how fast the controller
// manager creates the pods (its client's 20 requests a second), not only
// on the operator.
func waitServerReady(ctx context.Context, c client.Client, want int, progress func() int, stall time.Duration) (time.Time, bool) {
	last, lastMoved := -1, time.Now()
	for ctx.Err() == nil {
		s, err := readServer(ctx, c)
		if err == nil && s.Ready && s.ReadyNodes == int64(want) {
			return time.Now(), true
		}
		if p := progress() + int(s.ReadyNodes); p != last {
			last, lastMoved = p, time.Now()
		} else if time.Since(lastMoved) > stall {
			return time.Time{}, false
		}
		time.Sleep(250 * time.Millisecond)
	}
	return time.Time{}, false
}

// objectSize is the largest object of a kind: its name and its size as
// JSON, which is how the API server stores custom resources (built-in
// kinds are stored as protobuf, somewhat smaller).
type objectSize struct {
	Name  string `json:"name"`
	Bytes int    `json:"bytes"`
}

// largestObjects reads back the kinds the operator writes in the workload
// namespace and returns the largest of each.
func largestObjects(ctx context.Context, c client.Client) (map[string]objectSize, error) {
	ts := &unstructured.UnstructuredList{}
	ts.SetGroupVersionKind(turnServerGVK.GroupVersion().WithKind("TurnServerList"))
	lists := map[string]client.ObjectList{
		"TurnServer": ts, "ConfigMap": &corev1.ConfigMapList{}, "Secret": &corev1.SecretList{}, "DaemonSet": &appsv1.DaemonSetList{},
	}
	out := map[string]objectSize{}
	for kind, list := range lists {
		if err := c.List(ctx, list, client.InNamespace(workloadNS)); err != nil {
			return nil, fmt.Errorf("listing %ss: %w", kind, err)
		}
		items, err := apimeta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		for _, obj := range items {
			b, err := json.Marshal(obj)
			if err != nil {
				return nil, err
			}
			if len(b) > out[kind].Bytes {
				m, _ := apimeta.Accessor(obj)
				out[kind] = objectSize{Name: m.GetName(), Bytes: len(b)}
			}
		}
	}
	return out, nil
}
