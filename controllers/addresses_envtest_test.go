package controllers

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
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
		if n := o.relay.Addresses.Nodes["hostname-nat"]; n.Source != "STUN" || len(n.External) != 0 {
			return fmt.Errorf("relay.yaml node entry %+v", n)
		}
		cur := getTurnServer(t, ts)
		if len(cur.Status.Nodes) != 2 || cur.Status.Nodes[0].Source != turnpikev1.AddressFromSTUN {
			return fmt.Errorf("status nodes %+v", cur.Status.Nodes)
		}
		return expectCondition(cur, turnpikev1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected)
	})

	// Without the DNSEndpoint CRD, readiness still works and URLs use the hostname.
	createRelayPod(t, ts, "hostname-pub", true)
	eventually(t, "hostname URLs", func() error {
		if urls := getTurnServer(t, ts).Status.URLs; !slices.Equal(urls, []string{"turn:turn.example.com:3495?transport=udp"}) {
			return fmt.Errorf("urls %v", urls)
		}
		return nil
	})

	installCRD(t, "testdata/dnsendpoint-crd.yaml")
	createRelayPod(t, ts, "hostname-nat", true) // any change brings a reconcile
	eventually(t, "DNSEndpoint", func() error {
		de := &unstructured.Unstructured{}
		de.SetGroupVersionKind(dnsEndpointGVK)
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
