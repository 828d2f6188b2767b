package controllers

import (
	"context"
	"maps"
	"slices"

	"github.com/turnpike-dev/turnpike/controllers/render"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// SetupWithManager registers the reconciler and what it watches. Its field
// indexes are registered by Setup.
func (r *TurnServerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("turnserver").
		// Our own status writes bump no generation, so they do not loop back.
		For(&turnpikev1.TurnServer{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.DaemonSet{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.Service{}).
		// Another TurnServer's ports or placement can start or end a conflict.
		Watches(&turnpikev1.TurnServer{}, handler.EnqueueRequestsFromMapFunc(r.allTurnServers),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Node{}, &nodeHandler{cached: r.cached()}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(turnServerOfPod)).
		// A credential's state Secret changes the relay bundle.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(turnServerOfStateSecret)).
		// A TLS Secret a listener names appears, changes or goes.
		WatchesRawSource(source.Kind[client.Object](r.tls.metadata, secretMetadata(),
			handler.EnqueueRequestsFromMapFunc(r.turnServersUsingTLSSecret))).
		// A TurnCredential's username, or its state Secret, changes the relay bundle.
		Watches(&turnpikev1.TurnCredential{}, handler.EnqueueRequestsFromMapFunc(turnServerOfCredential)).
		// A relay found a new address with STUN.
		WatchesRawSource(source.Channel(r.statusPoller.events, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

func (r *TurnServerReconciler) allTurnServers(ctx context.Context, _ client.Object) []reconcile.Request {
	var list turnpikev1.TurnServerList
	if err := r.Client.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "listing TurnServers to re-reconcile")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, requestFor(&list.Items[i]))
	}
	return reqs
}

// turnServerOfPod maps a relay pod to its TurnServer by label.
func turnServerOfPod(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[turnpikev1.LabelTurnServer]
	if name == "" || o.GetLabels()["app.kubernetes.io/component"] != "relay" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

func turnServerOfCredential(_ context.Context, o client.Object) []reconcile.Request {
	tc := o.(*turnpikev1.TurnCredential)
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: tc.Namespace, Name: tc.Spec.TurnServerRef.Name}}}
}

// turnServerOfStateSecret maps a credential's state Secret to the
// TurnServer whose relay bundle holds it, by label.
func turnServerOfStateSecret(_ context.Context, o client.Object) []reconcile.Request {
	if l := o.GetLabels(); l["app.kubernetes.io/component"] == render.ComponentCredentialState && l[turnpikev1.LabelTurnServer] != "" {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: l[turnpikev1.LabelTurnServer]}}}
	}
	return nil
}

// turnServersUsingTLSSecret maps a Secret to the TurnServers whose
// listeners name it for TLS.
func (r *TurnServerReconciler) turnServersUsingTLSSecret(ctx context.Context, o client.Object) []reconcile.Request {
	var list turnpikev1.TurnServerList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()),
		client.MatchingFields{tlsSecretIndex: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing TurnServers that use a Secret", "secret", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, requestFor(&list.Items[i]))
	}
	return reqs
}

// nodeHandler re-reconciles only the TurnServers that select a node before
// or after a change, and only for changes that matter to relays: labels,
// taints, cordoning, addresses and the external-ip annotation. Kubelet heartbeats, which
// update every node every few seconds, are ignored.
type nodeHandler struct{ cached cachedObjects }

var _ handler.EventHandler = &nodeHandler{}

func (h *nodeHandler) Create(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueueSelecting(ctx, q, e.Object.(*corev1.Node))
}

func (h *nodeHandler) Delete(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if n, ok := e.Object.(*corev1.Node); ok {
		h.enqueueSelecting(ctx, q, n)
	}
}

func (h *nodeHandler) Update(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	old, cur := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
	if !nodeChangeMatters(old, cur) {
		return
	}
	h.enqueueSelecting(ctx, q, old, cur)
}

func (h *nodeHandler) Generic(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueueSelecting(ctx, q, e.Object.(*corev1.Node))
}

func (h *nodeHandler) enqueueSelecting(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], nodes ...*corev1.Node) {
	servers, err := h.cached.turnServers(ctx)
	if err != nil {
		log.FromContext(ctx).Error(err, "listing TurnServers that select a node")
		return
	}
	for _, ts := range servers {
		for _, n := range nodes {
			if render.SelectsNode(ts, n) {
				q.Add(requestFor(ts))
				break
			}
		}
	}
}

// nodeChangeMatters reports whether a node update can change placement,
// addresses, port conflicts or whether its relay is published (a cordoned
// node's is not).
func nodeChangeMatters(old, cur *corev1.Node) bool {
	return !maps.Equal(old.Labels, cur.Labels) || old.Spec.Unschedulable != cur.Spec.Unschedulable ||
		!slices.EqualFunc(old.Spec.Taints, cur.Spec.Taints, sameTaint) ||
		!slices.Equal(old.Status.Addresses, cur.Status.Addresses) ||
		old.Annotations[turnpikev1.AnnotationExternalIP] != cur.Annotations[turnpikev1.AnnotationExternalIP]
}

// sameTaint compares what placement reads of a taint. TimeAdded is left out:
// it changes no placement, and it is a time, which only typed code compares
// correctly.
func sameTaint(a, b corev1.Taint) bool {
	return a.Key == b.Key && a.Value == b.Value && a.Effect == b.Effect
}
