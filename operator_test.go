package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/test/testenv"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// TestOperatorCommand runs `turnpike operator` as a user would, against a
// real API server: it wins the leader Lease, answers its probes, reconciles a
// TurnServer, and returns cleanly when its context ends.
func TestOperatorCommand(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	probeAddr := testutil.FreeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runOperator(ctx, []string{"--kubeconfig", kubeconfig, "--metrics-bind-address", "0",
			"--health-probe-bind-address", probeAddr, "--issuer-bind-address", testutil.FreeAddr(t), "--relay-image", "example/turnpike:1", "--zap-log-level", "error"})
	}()

	testenv.Eventually(t, "readyz", func() error {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	ts := &turnpikev1.TurnServer{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: "default"},
		Spec: turnpikev1.TurnServerSpec{Realm: "example.org",
			Listeners: []turnpikev1.Listener{{Name: "udp", Protocol: turnpikev1.ProtocolUDP, Port: 3478}}},
	}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "relay DaemonSet", func() error {
		ds := &appsv1.DaemonSet{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "smoke-relay"}, ds); err != nil {
			return err
		}
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != "example/turnpike:1" {
			return fmt.Errorf("image %q", img)
		}
		return nil
	})
	lease := &coordinationv1.Lease{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "operator.turnpike.dev"}, lease); err != nil {
		t.Fatalf("leader election Lease: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("operator returned %v after cancel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("operator did not stop after cancel")
	}
}
