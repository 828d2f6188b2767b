package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/turnpike-dev/turnpike/controllers/render"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// TestHostnameSTUNAndDNSEndpoint: a node without a public address relies on
// STUN (not flagged), URLs use spec.hostname, and the DNSEndpoint appears
// once external-dns's CRD is installed, with the ready public addresses.
func TestHostnameSTUNAndDNSEndpoint(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "hostname")
	label := map[string]string{"suite": "hostname"}
	newNode(t, "hostname-nat", label, internalIP("10.2.0.1"))
	newNode(t, "hostname-pub", label, externalIP("198.51.100.70"), internalIP("10.2.0.2"))
	ts := minimalTurnServer(ns, "relay", "hostname", 3495)
	ts.Spec.MetricsPort, ts.Spec.HealthPort = 9661, 9662
	ts.Spec.RelayPortRange = turnpikev1.PortRange{Min: 43000, Max: 43999}
	ts.Spec.Hostname = "turn.example.com"
	ts.Spec.STUN = &turnpikev1.STUNDiscovery{Servers: []string{"stun.example.net:3478"}}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "STUN node", func() error {
		o, err := getRelayObjects(ts)
		if err != nil {
			return err
		}
		if o.relay.Addresses.STUN == nil || !slices.Equal(o.relay.Addresses.STUN.Servers, []string{"stun.example.net:3478"}) {
			return fmt.Errorf("relay.yaml stun %+v", o.relay.Addresses.STUN)
		}
		if len(o.relay.Addresses.Nodes) != 0 || o.relay.Addresses.NodeFile == "" {
			return fmt.Errorf("relay.yaml nodes %+v, node file %q", o.relay.Addresses.Nodes, o.relay.Addresses.NodeFile)
		}
		// No relay is ready yet; a node relying on STUN is not flagged as not public.
		cur := getTurnServer(t, ts)
		if n := cur.Status.AttentionNodes; len(n) != 2 || n[0].Name != "hostname-nat" || n[0].Source != turnpikev1.AddressFromSTUN ||
			!slices.Equal(n[0].Problems, []turnpikev1.NodeProblem{turnpikev1.NodeRelayNotReady}) {
			return fmt.Errorf("attention nodes %+v", n)
		}
		return expectCondition(cur, turnpikev1.ConditionDegraded, metav1.ConditionFalse, render.ReasonAsExpected)
	})

	// Without the DNSEndpoint CRD, readiness still works and URLs use the hostname.
	createRelayPod(t, ts, "hostname-pub", true)
	createRelayPod(t, ts, "hostname-nat", false)
	eventually(t, "node entries on the relay pods", func() error {
		for node, want := range map[string]string{"hostname-pub": "&{[198.51.100.70] ExternalIP}", "hostname-nat": "&{[] STUN}"} {
			if got, err := nodeEntryOf(ts, node); err != nil || got != want {
				return fmt.Errorf("pod on %s: node entry %s (%v), want %s", node, got, err, want)
			}
		}
		return nil
	})
	eventually(t, "hostname URLs", func() error {
		if urls := getTurnServer(t, ts).Status.URLs; !slices.Equal(urls, []string{"turn:turn.example.com:3495?transport=udp"}) {
			return fmt.Errorf("urls %v", urls)
		}
		return nil
	})

	installCRD(t, "testdata/dnsendpoint-crd.yaml")
	setPodReady(t, ts, "hostname-nat", true) // any change brings a reconcile
	eventually(t, "DNSEndpoint", func() error {
		de := &unstructured.Unstructured{}
		de.SetGroupVersionKind(render.DNSEndpointGVK)
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "relay-relay"}, de); err != nil {
			return err
		}
		eps, _, _ := unstructured.NestedSlice(de.Object, "spec", "endpoints")
		want := `[map[dnsName:turn.example.com recordTTL:60 recordType:A targets:[198.51.100.70]]]`
		if fmt.Sprint(eps) != want {
			return fmt.Errorf("endpoints %v, want %s", eps, want)
		}
		if refs := de.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != ts.UID {
			return fmt.Errorf("owner references %v", refs)
		}
		return nil
	})
}

func installCRD(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(data, crd); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(context.Background(), crd); err != nil {
		t.Fatal(err)
	}
	eventually(t, "CRD established", func() error {
		cur := &apiextensionsv1.CustomResourceDefinition{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(crd), cur); err != nil {
			return err
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("not established")
	})
}

// TestSTUNDiscoveredAddressIsPublished: the operator reads the address a
// relay discovered with STUN from the relay's /status (here a stand-in on
// loopback), outside of reconciles, and publishes it in status, URLs and the
// relay pod's node entry.
func TestSTUNDiscoveredAddressIsPublished(t *testing.T) {
	ctx := context.Background()
	discovered := atomic.Value{}
	discovered.Store("203.0.113.99")
	relayStatus := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(config.Status{STUN: &config.STUNStatus{
			Discovered: []config.DiscoveredAddress{{Address: discovered.Load().(string), Server: "stun.example.net:3478"}},
		}})
	}))
	defer relayStatus.Close()
	healthPort := int32(relayStatus.Listener.Addr().(*net.TCPAddr).Port)

	ns := newNamespace(t, "stun-status")
	newNode(t, "stun-local", map[string]string{"suite": "stun-status"}, internalIP("127.0.0.1"))
	ts := minimalTurnServer(ns, "relay", "stun-status", 3496)
	ts.Spec.MetricsPort, ts.Spec.HealthPort = 9671, healthPort
	ts.Spec.RelayPortRange = turnpikev1.PortRange{Min: 44000, Max: 44999}
	ts.Spec.STUN = &turnpikev1.STUNDiscovery{Servers: []string{"stun.example.net:3478"}}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay DaemonSet", func() error { _, err := getRelayObjects(ts); return err })
	createRelayPod(t, ts, "stun-local", true)
	published := func(addr string) func() error {
		return func() error {
			cur := getTurnServer(t, ts)
			if cur.Status.AddressSummary != addr || cur.Status.NodesNeedingAttention != 0 {
				return fmt.Errorf("addresses %q, %d nodes needing attention", cur.Status.AddressSummary, cur.Status.NodesNeedingAttention)
			}
			if !slices.Equal(cur.Status.URLs, []string{"turn:" + addr + ":3496?transport=udp"}) {
				return fmt.Errorf("urls %v", cur.Status.URLs)
			}
			if got, err := nodeEntryOf(ts, "stun-local"); err != nil || got != "&{["+addr+"] STUN}" {
				return fmt.Errorf("node entry %s (%v)", got, err)
			}
			return nil
		}
	}
	eventually(t, "discovered address published", published("203.0.113.99"))

	// The relay rediscovers (the NAT's address changed): the operator's
	// poller reads it (here every 200 ms, in a cluster every minute) and has
	// the TurnServer reconciled, with no other event.
	discovered.Store("203.0.113.100")
	eventually(t, "rediscovered address published", published("203.0.113.100"))
}
