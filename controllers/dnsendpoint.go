package controllers

import (
	"context"

	"github.com/turnpike-dev/turnpike/controllers/render"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// applyDNSEndpoint writes desired, the DNSEndpoint of spec.hostname, where
// external-dns's CRD exists and the records differ. Without the CRD, or
// without a hostname (desired nil), it does nothing.
func (r *TurnServerReconciler) applyDNSEndpoint(ctx context.Context, desired *unstructured.Unstructured) error {
	if desired == nil {
		return nil
	}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(render.DNSEndpointGVK)
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
