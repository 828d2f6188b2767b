//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// testDrain: scenario 5. The relay pod on node-a is deleted; the agent
// sends its relay SIGTERM, the relay drains (/readyz 503), the pod turns
// not ready, and node-a leaves the TurnServer's URLs and iceServers.json.
// A call started now relays through node-b only. Then the DaemonSet
// controller replaces the pod and node-a comes back.
func testDrain(t *testing.T, w *world) {
	ctx := context.Background()
	pods, err := w.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=relay", FieldSelector: "spec.nodeName=" + nodeA})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("relay pods on %s: %d, %v", nodeA, len(pods.Items), err)
	}
	old := pods.Items[0]
	if err := w.cs.CoreV1().Pods(ns).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	nodeAURL := fmt.Sprintf("turn:%s:%d", nodeAPublic, turnPort)
	eventually(t, time.Minute, "node-a to leave the published set", func() error {
		ts := w.turnServerStatus(t)
		if slices.ContainsFunc(ts.Status.URLs, func(u string) bool { return strings.HasPrefix(u, nodeAURL) }) {
			return fmt.Errorf("status.urls still has node-a: %v", ts.Status.URLs)
		}
		if ice := w.staticICE(t); len(ice) != 1 || slices.ContainsFunc(ice[0].URLs, func(u string) bool { return strings.HasPrefix(u, nodeAURL) }) {
			return fmt.Errorf("iceServers.json still has node-a: %+v", ice)
		}
		return nil
	})

	offer, answer := w.startPionCall(t, w.staticICE(t), 10).wait(t, 2*time.Minute)
	checkRelayed(t, "call during the drain", offer, answer, nodeBPublic)

	eventually(t, 2*time.Minute, "a new relay pod on node-a, Ready and published", func() error {
		ts := w.turnServerStatus(t)
		if ts.Status.ReadyNodes != 2 || !slices.ContainsFunc(ts.Status.URLs, func(u string) bool { return strings.HasPrefix(u, nodeAURL) }) {
			return fmt.Errorf("ready nodes %d, urls %v", ts.Status.ReadyNodes, ts.Status.URLs)
		}
		if _, err := w.cs.CoreV1().Pods(ns).Get(ctx, old.Name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("the old pod %s still exists", old.Name)
		}
		if ice := w.staticICE(t); len(ice) != 1 || !slices.ContainsFunc(ice[0].URLs, func(u string) bool { return strings.HasPrefix(u, nodeAURL) }) {
			return fmt.Errorf("iceServers.json lacks node-a: %+v", ice)
		}
		return nil
	})
}

func (w *world) turnServerStatus(t *testing.T) *turnpikev1.TurnServer {
	t.Helper()
	ts := &turnpikev1.TurnServer{}
	if err := w.cp.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: serverName}, ts); err != nil {
		t.Fatal(err)
	}
	return ts
}
