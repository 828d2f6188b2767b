package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// TestCachedObjectsAreTheCacheOwn: nodes, relay pods and TurnCredentials
// come from the informers as the cache's own objects (the same pointer on
// every pass, so nothing is copied), and select the same relay pods and
// credentials as a List: one TurnServer's, in its namespace only.
func TestCachedObjectsAreTheCacheOwn(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cached-objects")
	other := newNamespace(t, "cached-objects-other")
	ts := minimalTurnServer(ns, "a", "cached-objects", 3478)
	createRelayPod(t, ts, "cached-objects-node", false)
	createRelayPod(t, minimalTurnServer(ns, "b", "cached-objects", 3479), "cached-objects-node", false)
	createRelayPod(t, minimalTurnServer(other, "a", "cached-objects", 3478), "cached-objects-node", false)
	newNode(t, "cached-objects-node", nil)
	for _, c := range []struct{ ns, name, turnServer string }{{ns, "x", "a"}, {ns, "y", "a"}, {ns, "z", "b"}, {other, "x", "a"}} {
		tc := &turnpikev1.TurnCredential{
			ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: c.ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: c.turnServer},
				Type: turnpikev1.CredentialStatic, Username: c.name},
		}
		if err := env.Client.Create(ctx, tc); err != nil {
			t.Fatal(err)
		}
	}

	cached := cachedObjects{cache: reconciler.Cache, reader: reconciler.Client}
	listed := cachedObjects{reader: reconciler.Client}
	wantPods := []string{ns + "/a-relay-cached-objects-node"}
	wantCredentials := []string{ns + "/x", ns + "/y"}
	eventually(t, "the relay pods and credentials of a", func() error {
		for name, c := range map[string]cachedObjects{"informer": cached, "List": listed} {
			pods, err := c.relayPods(ctx, ts)
			if err != nil {
				return err
			}
			if got := keys(pods); !slices.Equal(got, wantPods) {
				return fmt.Errorf("%s: relay pods %v, want %v", name, got, wantPods)
			}
			credentials, err := c.credentialsOf(ctx, client.ObjectKeyFromObject(ts))
			if err != nil {
				return err
			}
			if got := keys(credentials); !slices.Equal(got, wantCredentials) {
				return fmt.Errorf("%s: credentials %v, want %v", name, got, wantCredentials)
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

// keys are the objects' namespace/name, sorted.
func keys[T client.Object](objs []T) []string {
	var out []string
	for _, o := range objs {
		out = append(out, client.ObjectKeyFromObject(o).String())
	}
	slices.Sort(out)
	return out
}
