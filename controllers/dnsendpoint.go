package controllers

import (
	"context"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// dnsEndpointGVK is external-dns's DNSEndpoint. The operator does not
// depend on external-dns: it publishes one only where the CRD is installed.
var dnsEndpointGVK = schema.GroupVersionKind{Group: "externaldns.k8s.io", Version: "v1alpha1", Kind: "DNSEndpoint"}

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
	u.SetGroupVersionKind(dnsEndpointGVK)
	u.SetName(relayName(ts))
	u.SetNamespace(ts.Namespace)
	u.SetLabels(relayLabels(ts))
	var owner metav1.OwnerReference
	mustCopyJSON(ownerReference(ts, "TurnServer"), &owner)
	u.SetOwnerReferences([]metav1.OwnerReference{owner})
	return u
}

// applyDNSEndpoint writes desired, the DNSEndpoint of spec.hostname, where
// external-dns's CRD exists and the records differ. Without the CRD, or
// without a hostname (desired nil), it does nothing.
func (r *TurnServerReconciler) applyDNSEndpoint(ctx context.Context, desired *unstructured.Unstructured) error {
	if desired == nil {
		return nil
	}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(dnsEndpointGVK)
	// Unstructured objects are read from the API server, not the cache: the
	// operator cannot watch a kind that may not exist.
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(desired), live)
	switch {
	case meta.IsNoMatchError(err):
		log.FromContext(ctx).V(1).Info("DNSEndpoint CRD not installed; not publishing hostname", "hostname", desired.GetName())
		return nil
	case err == nil && sameJSON(live.Object["spec"], desired.Object["spec"]):
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	return r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(desired), client.FieldOwner(FieldOwner), client.ForceOwnership)
}
