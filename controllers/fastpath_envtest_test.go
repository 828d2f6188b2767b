package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/controllers/render"
	relayconfig "github.com/turnpike-dev/turnpike/relay/config"
)

// TestFastPathCondition runs three relays' /status on loopback, as the
// default TurnServer's relays (fast path Auto, through the agent) report
// it: the TurnServer counts them in the kernel; one relay loses its agent
// and the FastPath condition turns False naming it and its reason, with no
// other event than the operator's own reading; the fast path Disabled
// removes the condition and the counts.
func TestFastPathCondition(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "fastpath-cond")
	reason := map[string]*atomic.Value{} // by node; "" means active
	var port int
	nodes := []string{"fp-a", "fp-b", "fp-c"}
	for i, node := range nodes {
		reason[node] = &atomic.Value{}
		reason[node].Store("")
		host := fmt.Sprintf("127.0.0.%d", 30+i)
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port // the relays of a TurnServer share the health port
		srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			why := reason[node].Load().(string)
			_ = json.NewEncoder(w).Encode(relayconfig.Status{Ready: true, FastPath: &relayconfig.FastPathStatus{
				Mode: "Auto", Agent: true, Active: why == "", Reason: why}})
		})}}
		srv.Start()
		defer srv.Close()
		newNode(t, node, map[string]string{"suite": "fastpath-cond"}, externalIP(fmt.Sprintf("203.0.113.%d", 30+i)), internalIP(host))
	}
	ts := minimalTurnServer(ns, "relay", "fastpath-cond", 3478)
	ts.Spec.HealthPort = int32(port)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay DaemonSet", func() error { _, err := getRelayObjects(ts); return err })

	fastPath := func(want string, kernel, userspace int32, says ...string) func() error {
		return func() error {
			cur := getTurnServer(t, ts)
			c := meta.FindStatusCondition(cur.Status.Conditions, turnpikev1.ConditionFastPath)
			if c == nil || string(c.Status)+"/"+c.Reason != want || c.ObservedGeneration != cur.Generation {
				return fmt.Errorf("FastPath condition %+v, want %s at generation %d", c, want, cur.Generation)
			}
			if s := cur.Status.FastPath; s == nil || s.KernelRelays != kernel || s.UserspaceRelays != userspace {
				return fmt.Errorf("status.fastPath %+v, want %d in the kernel, %d in userspace", s, kernel, userspace)
			}
			for _, s := range says {
				if !strings.Contains(c.Message, s) {
					return fmt.Errorf("message %q does not say %q", c.Message, s)
				}
			}
			return nil
		}
	}
	eventually(t, "no relay read yet", fastPath("Unknown/"+render.ReasonNotReported, 0, 0))
	for _, node := range nodes {
		createRelayPod(t, ts, node, true)
	}
	eventually(t, "all relays in the kernel", fastPath("True/"+render.ReasonKernelActive, 3, 0))

	// Reading the relays again and again, with nothing new, writes nothing.
	before := getTurnServer(t, ts).ResourceVersion
	time.Sleep(5 * 200 * time.Millisecond) // five of the suite's poll intervals
	if after := getTurnServer(t, ts).ResourceVersion; after != before {
		t.Errorf("TurnServer written (resourceVersion %s → %s) while its relays reported nothing new", before, after)
	}

	reason["fp-b"].Store("fast-path agent connection lost")
	eventually(t, "fp-b in userspace", fastPath("False/"+render.ReasonAgentUnavailable, 2, 1,
		"1 of 3", "fp-b (fast-path agent connection lost)"))
	reason["fp-b"].Store("")
	eventually(t, "fp-b's agent back", fastPath("True/"+render.ReasonKernelActive, 3, 0))

	update(t, ts, func(ts *turnpikev1.TurnServer) { ts.Spec.Relay.FastPath.Mode = turnpikev1.FastPathDisabled })
	eventually(t, "no FastPath condition while Disabled", func() error {
		cur := getTurnServer(t, ts)
		if c := meta.FindStatusCondition(cur.Status.Conditions, turnpikev1.ConditionFastPath); c != nil || cur.Status.FastPath != nil ||
			cur.Status.ObservedGeneration != cur.Generation {
			return fmt.Errorf("condition %+v, status.fastPath %+v at generation %d of %d", c, cur.Status.FastPath, cur.Status.ObservedGeneration, cur.Generation)
		}
		return nil
	})
}
