package render

import (
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// DNSEndpointGVK is external-dns's DNSEndpoint. The operator does not
// depend on external-dns: it publishes one only where the CRD is installed.
var DNSEndpointGVK = schema.GroupVersionKind{Group: "externaldns.k8s.io", Version: "v1alpha1", Kind: "DNSEndpoint"}

// dnsRecordTTL is short so that a node leaving the published set leaves DNS soon.
const dnsRecordTTL = 60

// +kubebuilder:rbac:groups=externaldns.k8s.io,resources=dnsendpoints,verbs=get;create;patch

// desiredDNSEndpoint publishes spec.hostname with an A and an AAAA record of
// published, the public addresses of at most spec.urlNodesPerFamily ready
// nodes per family. Nodes that rely on STUN or fell back to their InternalIP
// have no address the operator can publish.
func desiredDNSEndpoint(ts *turnpikev1.TurnServer, published []netip.Addr) *unstructured.Unstructured {
	var v4, v6 []any
	for _, a := range published {
		if a.Is6() {
			v6 = append(v6, a.String())
		} else {
			v4 = append(v4, a.String())
		}
	}
	endpoints := []any{}
	for _, rec := range []struct {
		typ     string
		targets []any
	}{{"A", v4}, {"AAAA", v6}} {
		if len(rec.targets) > 0 {
			endpoints = append(endpoints, map[string]any{
				"dnsName": ts.Spec.Hostname, "recordType": rec.typ, "recordTTL": int64(dnsRecordTTL), "targets": rec.targets,
			})
		}
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"endpoints": endpoints}}}
	u.SetGroupVersionKind(DNSEndpointGVK)
	u.SetName(RelayName(ts))
	u.SetNamespace(ts.Namespace)
	u.SetLabels(RelayLabels(ts))
	var owner metav1.OwnerReference
	mustCopyJSON(ownerReference(ts, "TurnServer"), &owner)
	u.SetOwnerReferences([]metav1.OwnerReference{owner})
	return u
}
