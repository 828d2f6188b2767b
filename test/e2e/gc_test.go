//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// testGarbageCollection: scenario 7, last because it tears the relays down.
// Deleting the TurnServer lets the garbage collector remove everything
// generated for it (DaemonSet, pods, ConfigMap, Secret, ServiceAccount,
// Service), and the agent stops the relays; deleting the TurnCredentials
// removes their Secrets. The operator has no finalizers, so this is all
// owner references.
func testGarbageCollection(t *testing.T, w *world) {
	ctx := context.Background()
	c := w.cp.client
	if err := c.Delete(ctx, turnServer()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the relay objects to be garbage-collected", func() error {
		return w.leftovers(ctx, "app.kubernetes.io/component=relay")
	})
	eventually(t, 30*time.Second, "the relays to stop", func() error {
		for _, n := range w.lab.nodes() {
			if w.agent.podOn(n.name) != nil {
				return fmt.Errorf("a relay still runs on %s", n.name)
			}
		}
		return nil
	})
	tcs := &turnpikev1.TurnCredentialList{}
	if err := c.List(ctx, tcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range tcs.Items {
		if err := c.Delete(ctx, &tcs.Items[i]); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, time.Minute, "the credential Secrets to be garbage-collected", func() error {
		return w.leftovers(ctx, turnpikev1.LabelTurnServer+"="+serverName)
	})
}

// leftovers lists what still exists of the kinds the operator generates.
func (w *world) leftovers(ctx context.Context, selector string) error {
	opts := metav1.ListOptions{LabelSelector: selector}
	core, apps := w.cs.CoreV1(), w.cs.AppsV1()
	var left []string
	count := func(kind string, n int, err error) {
		if err != nil {
			left = append(left, fmt.Sprintf("%s: %v", kind, err))
		} else if n > 0 {
			left = append(left, fmt.Sprintf("%d %s", n, kind))
		}
	}
	ds, err := apps.DaemonSets(ns).List(ctx, opts)
	count("DaemonSets", len(ds.Items), err)
	pods, err := core.Pods(ns).List(ctx, opts)
	count("Pods", len(pods.Items), err)
	cms, err := core.ConfigMaps(ns).List(ctx, opts)
	count("ConfigMaps", len(cms.Items), err)
	secrets, err := core.Secrets(ns).List(ctx, opts)
	count("Secrets", len(secrets.Items), err)
	sas, err := core.ServiceAccounts(ns).List(ctx, opts)
	count("ServiceAccounts", len(sas.Items), err)
	svcs, err := core.Services(ns).List(ctx, opts)
	count("Services", len(svcs.Items), err)
	if len(left) > 0 {
		return fmt.Errorf("still there: %v", left)
	}
	return nil
}
