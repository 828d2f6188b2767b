package controllers

import (
	"context"
	"fmt"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// TestClassicSTUNToggle: the API server defaults spec.classicSTUN to true;
// turning it off reaches relay.yaml without rolling the relay pods.
func TestClassicSTUNToggle(t *testing.T) {
	ns := newNamespace(t, "classic-stun")
	newNode(t, "classic-a", map[string]string{"suite": "classic"}, externalIP("198.51.100.3"))
	ts := minimalTurnServer(ns, "classic", "classic", 3478)
	if err := env.Client.Create(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	var stored turnpikev1.TurnServer
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(ts), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Spec.ClassicSTUN == nil || !*stored.Spec.ClassicSTUN {
		t.Fatalf("spec.classicSTUN defaulted to %v, want true", stored.Spec.ClassicSTUN)
	}
	var before *relayObjects
	eventually(t, "objects", func() (err error) { before, err = getRelayObjects(ts); return err })
	if !before.relay.STUN.ClassicEnabled() {
		t.Fatal("relay.yaml turns classic STUN off by default")
	}
	hash := before.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash]

	update(t, ts, func(ts *turnpikev1.TurnServer) { off := false; ts.Spec.ClassicSTUN = &off })
	eventually(t, "stun.classic false in relay.yaml", func() error {
		o, err := getRelayObjects(ts)
		if err != nil {
			return err
		}
		if o.relay.STUN.ClassicEnabled() {
			return fmt.Errorf("relay.yaml stun %+v", o.relay.STUN)
		}
		if got := o.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash]; got != hash {
			return fmt.Errorf("socket hash changed from %s to %s for a hot-reloadable change", hash, got)
		}
		return nil
	})
}
