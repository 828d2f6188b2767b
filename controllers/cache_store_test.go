package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestCachedObjectsAreTheCacheOwn: nodes and relay pods come from the
// informers as the cache's own objects (the same pointer on every pass, so
// nothing is copied), and select the same relay pods as a List: one
// TurnServer's, in its namespace only.
func TestCachedObjectsAreTheCacheOwn(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cached-objects")
	other := newNamespace(t, "cached-objects-other")
	ts := minimalTurnServer(ns, "a", "cached-objects", 3478)
	createRelayPod(t, ts, "cached-objects-node", false)
	createRelayPod(t, minimalTurnServer(ns, "b", "cached-objects", 3479), "cached-objects-node", false)
	createRelayPod(t, minimalTurnServer(other, "a", "cached-objects", 3478), "cached-objects-node", false)
	newNode(t, "cached-objects-node", nil)

	cached := cachedObjects{cache: reconciler.Cache, reader: reconciler.Client}
	listed := cachedObjects{reader: reconciler.Client}
	want := []string{ns + "/a-relay-cached-objects-node"}
	eventually(t, "the relay pods of a", func() error {
		for name, c := range map[string]cachedObjects{"informer": cached, "List": listed} {
			pods, err := c.relayPods(ctx, ts)
			if err != nil {
				return err
			}
			var got []string
			for _, p := range pods {
				got = append(got, p.Namespace+"/"+p.Name)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s: relay pods %v, want %v", name, got, want)
			}
		}
		return nil
	})
	var found [2]*corev1.Node
	for pass := range found {
		nodes, err := cached.nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Name == "cached-objects-node" {
				found[pass] = n
			}
		}
	}
	if found[0] == nil || found[0] != found[1] {
		t.Errorf("two passes read node %p and %p, want the cache's one object both times", found[0], found[1])
	}
}
