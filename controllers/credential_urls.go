package controllers

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/turnpike-dev/turnpike/controllers/render"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// urlChoices remembers, per TurnCredential, what its last pass chose its
// iceServers.json URLs from, so that a node's or relay pod's change wakes
// only the credentials whose URLs it can change: with a hundred credentials,
// a node's new address would otherwise wake all of them to find that, but
// for one or none, nothing changed.
//
// A pass forgets its credential's entry before it reads anything and
// remembers the new one after rendering: a change seen between the two
// finds no entry and wakes the credential, which the work queue then
// processes again once this pass is done. A change seen after it is judged
// by the choice made from the cache as it was before that change.
//
// A credential that was woken and whose pass has not started yet is not
// woken again: its pass will read the cache as it is then. At a cold start
// every node and relay-pod event of the initial sync would otherwise add
// every credential to the queue again (a million adds at 5,000 nodes and
// 100 credentials, which was half of what a starting operator allocated).
type urlChoices struct {
	mu    sync.Mutex
	m     map[types.NamespacedName]render.URLChoice
	woken map[types.NamespacedName]bool // woken by wakes, pass not started
}

// forget is called when a pass starts, before it reads anything.
func (u *urlChoices) forget(key types.NamespacedName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, key)
	delete(u.woken, key)
}

func (u *urlChoices) remember(key types.NamespacedName, c render.URLChoice) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[types.NamespacedName]render.URLChoice{}
	}
	u.m[key] = c
}

// wakes reports whether a change for which matters returns true wakes the
// credential key: always when no choice is remembered, never while it is
// already woken. The caller adds key to the queue when it does.
func (u *urlChoices) wakes(key types.NamespacedName, matters func(render.URLChoice) bool) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.woken[key] {
		return false
	}
	if c, ok := u.m[key]; ok && !matters(c) {
		return false
	}
	if u.woken == nil {
		u.woken = map[types.NamespacedName]bool{}
	}
	u.woken[key] = true
	return true
}

// relayNodesMemo keeps a TurnServer's relay nodes from one TurnCredential
// pass for the next while no node or relay pod changed in between: listing
// every node and relay pod copies each struct out of the cache, several MB
// at 5,000 nodes, and a rollout runs hundreds of credential passes. The
// event handlers count the changes (changed) after the cache has them; a
// pass reads the count before it lists, so a change it may have missed
// makes its entry stale.
type relayNodesMemo struct {
	mu      sync.Mutex
	changes uint64
	entries map[types.UID]relayNodesEntry
}

type relayNodesEntry struct {
	generation int64  // of the TurnServer: its spec selects and addresses nodes
	changes    uint64 // the count when the nodes were listed
	nodes      []render.RelayNode
}

func (m *relayNodesMemo) changed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.changes++
}

// of returns ts's relay nodes, listing them unless nothing changed since
// the last time.
func (m *relayNodesMemo) of(ctx context.Context, c cachedObjects, ts *turnpikev1.TurnServer) ([]render.RelayNode, error) {
	m.mu.Lock()
	e, ok := m.entries[ts.UID]
	changes := m.changes
	m.mu.Unlock()
	if ok && e.changes == changes && e.generation == ts.Generation {
		return e.nodes, nil
	}
	nodes, err := observeRelayNodes(ctx, c, ts)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = map[types.UID]relayNodesEntry{}
	}
	m.entries[ts.UID] = relayNodesEntry{ts.Generation, changes, nodes}
	return nodes, nil
}

// enqueueCredentials adds the credentials of TurnServer ts whose remembered
// choice matters says can change (all of them for a nil matters).
func (r *TurnCredentialReconciler) enqueueCredentials(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], ts client.ObjectKey, matters func(render.URLChoice) bool) {
	credentials, err := r.cached().credentialsOf(ctx, ts)
	if err != nil {
		log.FromContext(ctx).Error(err, "listing the TurnCredentials of a TurnServer", "turnServer", ts.Name)
		return
	}
	for _, tc := range credentials {
		key := client.ObjectKeyFromObject(tc)
		if matters == nil || r.choices.wakes(key, matters) {
			q.Add(reconcile.Request{NamespacedName: key})
		}
	}
}

// turnServerChanges wakes credentials for their TurnServer: all of them when
// it appears, goes or has a new spec; those whose URLs are its status.urls
// when those change; none for its other status changes (node counts,
// conditions), which change no credential.
func (r *TurnCredentialReconciler) turnServerChanges() handler.EventHandler {
	all := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		r.enqueueCredentials(ctx, q, client.ObjectKeyFromObject(o), nil)
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			all(ctx, e.Object, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			all(ctx, e.Object, q)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			all(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, okOld := e.ObjectOld.(*turnpikev1.TurnServer)
			cur, okCur := e.ObjectNew.(*turnpikev1.TurnServer)
			switch {
			case !okOld || !okCur || old.Generation != cur.Generation:
				all(ctx, e.ObjectNew, q)
			case !slices.Equal(old.Status.URLs, cur.Status.URLs):
				r.enqueueCredentials(ctx, q, client.ObjectKeyFromObject(cur), func(c render.URLChoice) bool { return c.FromStatus })
			}
		},
	}
}

// nodeChanges wakes the credentials whose URLs a node's change can change
// (render.URLChoice.NodeMatters), for every TurnServer that selects the
// node before or after it. Changes no relay cares about are ignored, as for
// TurnServers (nodeChangeMatters).
func (r *TurnCredentialReconciler) nodeChanges() handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.enqueueForNode(ctx, q, e.Object.(*corev1.Node))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if n, ok := e.Object.(*corev1.Node); ok {
				r.enqueueForNode(ctx, q, n)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, cur := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
			if nodeChangeMatters(old, cur) {
				r.enqueueForNode(ctx, q, old, cur)
			}
		},
	}
}

// enqueueForNode wakes the credentials whose URLs can change with a node,
// given as it was and is.
func (r *TurnCredentialReconciler) enqueueForNode(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], versions ...*corev1.Node) {
	r.relayNodes.changed()
	servers, err := r.cached().turnServers(ctx)
	if err != nil {
		log.FromContext(ctx).Error(err, "listing TurnServers that select a node")
		return
	}
	for _, ts := range servers {
		var addrs []netip.Addr
		selected := false
		for _, n := range versions {
			if render.SelectsNode(ts, n) {
				selected = true
				addrs = append(addrs, render.ResolveNodeAddresses(ts, n).Addresses...)
			}
		}
		if selected {
			name := versions[0].Name
			r.enqueueCredentials(ctx, q, client.ObjectKeyFromObject(ts), func(c render.URLChoice) bool { return c.NodeMatters(name, addrs) })
		}
	}
}

// relayPodChanges wakes the credentials whose URLs can change when a relay
// pod starts or stops serving its node: it turns ready or not, or
// terminates. Its other changes (the operator's own annotation) are ignored.
func (r *TurnCredentialReconciler) relayPodChanges() handler.EventHandler {
	serving := func(p *corev1.Pod) bool { return render.ReadyNodes([]*corev1.Pod{p})[p.Spec.NodeName] }
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if p, ok := e.Object.(*corev1.Pod); ok && serving(p) {
				r.enqueueForRelayPod(ctx, q, p)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			// A pod that was terminating stopped serving then (an update).
			if p, ok := e.Object.(*corev1.Pod); ok && serving(p) {
				r.enqueueForRelayPod(ctx, q, p)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, okOld := e.ObjectOld.(*corev1.Pod)
			cur, okCur := e.ObjectNew.(*corev1.Pod)
			if okOld && okCur && (serving(old) != serving(cur) || old.Spec.NodeName != cur.Spec.NodeName) {
				r.enqueueForRelayPod(ctx, q, cur)
			}
		},
	}
}

// enqueueForRelayPod wakes the credentials whose URLs can change when the
// relay on a pod's node starts or stops serving.
func (r *TurnCredentialReconciler) enqueueForRelayPod(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], p *corev1.Pod) {
	r.relayNodes.changed()
	reqs := turnServerOfPod(ctx, p)
	if len(reqs) == 0 || p.Spec.NodeName == "" {
		return
	}
	// Read only: UnsafeDisableDeepCopy, as for Lists.
	ts := &turnpikev1.TurnServer{}
	if err := r.Client.Get(ctx, reqs[0].NamespacedName, ts, client.UnsafeDisableDeepCopy); err != nil {
		return // gone: its deletion wakes its credentials
	}
	node := &corev1.Node{}
	var addrs []netip.Addr
	if err := r.Client.Get(ctx, client.ObjectKey{Name: p.Spec.NodeName}, node, client.UnsafeDisableDeepCopy); err == nil {
		addrs = render.ResolveNodeAddresses(ts, node).Addresses
	} // a node that is gone is judged by name: it can only leave a choice
	r.enqueueCredentials(ctx, q, reqs[0].NamespacedName, func(c render.URLChoice) bool { return c.NodeMatters(p.Spec.NodeName, addrs) })
}
