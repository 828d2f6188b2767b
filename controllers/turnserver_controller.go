package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// TurnServerReconciler turns a TurnServer into a relay DaemonSet and what it
// needs: a ServiceAccount, the relay ConfigMap, the credential Secret and a
// headless metrics Service, all owned by the TurnServer so that deleting it
// removes them.
type TurnServerReconciler struct {
	Client client.Client
	// Cache is the cache Client reads; nodes and relay pods are read from
	// its informers without copying. nil lists them through Client.
	Cache cache.Cache
	// RelayImage is used when a TurnServer does not name one: the operator's own image.
	RelayImage string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// statusPoller reads the relays' /status: the addresses they discover
	// with STUN and their fast path (see readRelayStatus).
	statusPoller *relayStatusPoller
	// tls reads the TLS Secrets that listeners name.
	tls *tlsSecrets
	// Recorder records Events on TurnServers; nil records none.
	Recorder events.EventRecorder
	// written is what the operator last wrote to each object: its status
	// (applyStatus) or a generated object (applyIfChanged).
	written writeMemory
	// annotated is the node-addresses annotation last written to each
	// relay pod (annotateRelayPods).
	annotated writeMemory
}

// +kubebuilder:rbac:groups=turnpike.dev,resources=turnservers,verbs=get;list;watch
// +kubebuilder:rbac:groups=turnpike.dev,resources=turnservers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=turnpike.dev,resources=turncredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps;secrets;serviceaccounts;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes;pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one TurnServer's generated objects and status in line
// with its spec, in four phases: observe reads everything the pass depends
// on; render.Relay computes the desired objects from that observation
// alone; applyRelayObjects writes those that differ; and the status,
// computed from the observation and what the apply returned, is written on
// every pass, failures included.
func (r *TurnServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ts := &turnpikev1.TurnServer{}
	if err := r.Client.Get(ctx, req.NamespacedName, ts); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ts.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references let the garbage collector clean up
	}

	obs, err := r.observe(ctx, ts)
	if err != nil {
		err = fmt.Errorf("reading the cluster: %w", err)
		return ctrl.Result{}, errors.Join(err, r.updateStatus(ctx, ts, render.ObserveFailedStatus(ts, err)))
	}
	objs, err := render.Relay(ts, obs, r.RelayImage)
	if err == nil {
		err = r.applyRelayObjects(ctx, ts, objs)
	}
	// A failed write is shown in the status (Ready=False and Degraded=True,
	// ApplyFailed) and returned, so the controller logs it and retries with
	// backoff.
	if serr := r.updateStatus(ctx, ts, render.ComputeStatus(ts, obs, err)); serr != nil || err != nil {
		return ctrl.Result{}, errors.Join(err, serr)
	}
	return ctrl.Result{RequeueAfter: r.nextVisit(objs.CredentialsExpire)}, nil
}

// nextVisit is when to reconcile again without an event, or 0 for never:
// when a key in the relay bundle expires (relays stop accepting it on their
// own; the bundle is tidied then). Addresses that relays discover with STUN,
// and their fast path turning on or off, bring their own event
// (relayStatusPoller).
func (r *TurnServerReconciler) nextVisit(credentialsExpire time.Time) time.Duration {
	if credentialsExpire.IsZero() {
		return 0
	}
	return max(credentialsExpire.Sub(r.now()), time.Second)
}

func (r *TurnServerReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// observe gathers what the status and the generated objects depend on.
func (r *TurnServerReconciler) observe(ctx context.Context, ts *turnpikev1.TurnServer) (*render.Observation, error) {
	// Nodes and relay pods are read, never changed, so they are the
	// cache's own objects, not copies.
	cached := r.cached()
	nodes, err := cached.nodes(ctx)
	if err != nil {
		return nil, err
	}
	var all turnpikev1.TurnServerList
	if err := r.Client.List(ctx, &all); err != nil {
		return nil, err
	}
	obs := &render.Observation{
		Nodes:     render.SelectedNodes(ts, nodes),
		Addresses: map[string]render.NodeAddresses{},
		Conflict:  render.FindPortConflict(ts, all.Items, nodes),
	}
	for _, n := range obs.Nodes {
		obs.Addresses[n.Name] = render.ResolveNodeAddresses(ts, n)
	}
	if obs.MissingTLSKeys, err = r.checkTLSSecrets(ctx, ts); err != nil {
		return nil, err
	}
	if obs.Pods, err = cached.relayPods(ctx, ts); err != nil {
		return nil, err
	}
	obs.ReadyPods = render.ReadyNodes(obs.Pods)
	r.readRelayStatus(ts, obs)

	key := client.ObjectKey{Namespace: ts.Namespace, Name: render.RelayName(ts)}
	if obs.LiveRelayConfig, err = r.liveRelayConfig(ctx, key); err != nil {
		return nil, err
	}
	if obs.DaemonSet, err = r.liveDaemonSet(ctx, key); err != nil {
		return nil, err
	}
	if obs.Credentials, err = r.credentialEntries(ctx, ts); err != nil {
		return nil, err
	}
	if obs.LiveBundle, err = r.liveBundle(ctx, ts); err != nil {
		return nil, err
	}
	return obs, nil
}

// liveRelayConfig is the relay.yaml the relays have now, or nil when there
// is none or it does not parse.
func (r *TurnServerReconciler) liveRelayConfig(ctx context.Context, key client.ObjectKey) (*config.Relay, error) {
	cm := &corev1.ConfigMap{}
	if err := r.Client.Get(ctx, key, cm); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	live, err := config.ParseRelay([]byte(cm.Data[config.RelayFile]))
	if err != nil {
		return nil, nil // replaced by what renderRelayConfig makes
	}
	return live, nil
}

// liveDaemonSet is the relay DaemonSet, or nil before it is created.
func (r *TurnServerReconciler) liveDaemonSet(ctx context.Context, key client.ObjectKey) (*appsv1.DaemonSet, error) {
	ds := &appsv1.DaemonSet{}
	if err := r.Client.Get(ctx, key, ds); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return ds, nil
}

// credentialEntries are this TurnServer's TurnCredentials with their
// stored state. One whose state is not written yet, or unreadable, is left
// out: the relays keep no key for it.
func (r *TurnServerReconciler) credentialEntries(ctx context.Context, ts *turnpikev1.TurnServer) ([]render.CredentialEntry, error) {
	// Credentials and their Secrets are only read: the cache's own
	// objects, not deep copies (Secrets keep their managedFields).
	tcs, err := r.cached().credentialsOf(ctx, client.ObjectKeyFromObject(ts))
	if err != nil {
		return nil, err
	}
	var entries []render.CredentialEntry
	for _, tc := range tcs {
		if !tc.DeletionTimestamp.IsZero() {
			continue
		}
		s := &corev1.Secret{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: tc.Namespace, Name: render.StateSecretName(tc)}, s, client.UnsafeDisableDeepCopy)
		if apierrors.IsNotFound(err) {
			continue // not issued yet
		} else if err != nil {
			return nil, err
		}
		st, err := render.DecodeCredentialState(s.Data)
		if err != nil {
			log.FromContext(ctx).Error(err, "skipping unreadable credential state", "turnCredential", tc.Name)
			continue
		}
		entries = append(entries, render.CredentialEntry{TC: tc, State: st})
	}
	return entries, nil
}

// liveBundle is the credentials.yaml the relays have now, or nil when there
// is none or it does not parse (it is then replaced).
func (r *TurnServerReconciler) liveBundle(ctx context.Context, ts *turnpikev1.TurnServer) (*config.Credentials, error) {
	live := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ts.Namespace, Name: render.CredentialSecretName(ts)}, live, client.UnsafeDisableDeepCopy) // read only
	if err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	bundle, err := config.ParseCredentials(live.Data[config.CredentialsFile])
	if err != nil {
		return nil, nil
	}
	return bundle, nil
}

// applyRelayObjects applies every generated object that differs from what is
// live, then the relay pods' node addresses and the DNSEndpoint.
func (r *TurnServerReconciler) applyRelayObjects(ctx context.Context, ts *turnpikev1.TurnServer, objs *render.RelayObjects) error {
	key := client.ObjectKey{Namespace: ts.Namespace, Name: render.RelayName(ts)}
	secretKey := client.ObjectKey{Namespace: ts.Namespace, Name: render.CredentialSecretName(ts)}
	type step struct {
		kind  string
		apply func() (bool, error)
	}
	steps := []step{
		{"ServiceAccount", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, &r.written, key, &corev1.ServiceAccount{}, objs.ServiceAccount, corev1ac.ExtractServiceAccount)
		}},
		{"ConfigMap", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, &r.written, key, &corev1.ConfigMap{}, objs.ConfigMap, corev1ac.ExtractConfigMap)
		}},
		{"Secret", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, &r.written, secretKey, &corev1.Secret{}, objs.Credentials, corev1ac.ExtractSecret)
		}},
		{"Service", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, &r.written, key, &corev1.Service{}, objs.Service, corev1ac.ExtractService)
		}},
	}
	if objs.DaemonSet != nil {
		steps = append(steps, step{"DaemonSet", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, &r.written, key, &appsv1.DaemonSet{}, objs.DaemonSet, appsv1ac.ExtractDaemonSet)
		}})
	}
	for _, s := range steps {
		applied, err := s.apply()
		if err != nil {
			return fmt.Errorf("applying %s: %w", s.kind, err)
		}
		if applied {
			log.FromContext(ctx).V(1).Info("applied", "kind", s.kind)
		}
	}
	if err := r.annotateRelayPods(ctx, objs.PodAnnotations); err != nil {
		return err
	}
	if err := r.applyDNSEndpoint(ctx, objs.DNSEndpoint); err != nil {
		return fmt.Errorf("applying DNSEndpoint: %w", err)
	}
	return nil
}

// checkTLSSecrets reports TLS listeners whose Secret is missing or lacks a
// certificate or key. Such a relay cannot open that listener.
func (r *TurnServerReconciler) checkTLSSecrets(ctx context.Context, ts *turnpikev1.TurnServer) ([]string, error) {
	var problems []string
	for _, l := range render.TLSListeners(ts) {
		found, complete, err := r.tls.check(ctx, client.ObjectKey{Namespace: ts.Namespace, Name: l.TLSSecretRef.Name})
		switch {
		case err != nil:
			return nil, err
		case !found:
			problems = append(problems, fmt.Sprintf("listener %s: Secret %s not found", l.Name, l.TLSSecretRef.Name))
		case !complete:
			problems = append(problems, fmt.Sprintf("listener %s: Secret %s has no %s and %s",
				l.Name, l.TLSSecretRef.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey))
		}
	}
	return problems, nil
}

func (r *TurnServerReconciler) cached() cachedObjects {
	return cachedObjects{cache: r.Cache, reader: r.Client}
}

// annotateRelayPods writes each relay pod's node addresses into its
// turnpike.dev/node-addresses annotation, which its relay reads through a
// downward-API file. So one node's new address is one small write to one
// pod, which only that node's kubelet syncs. The merge patch carries no
// resourceVersion: the pod's other changes (status) cannot make it conflict.
// A pod annotated by a pass whose write the cache has not shown yet is not
// patched again with the same value (see writeMemory).
//
// The patches go podAnnotationWorkers at a time (the client's rate limit
// still applies): one at a time, a rollout at 10,000 nodes annotated pods
// more slowly than the controller manager created them, and the status,
// written after this, lagged the relays by more than a minute.
func (r *TurnServerReconciler) annotateRelayPods(ctx context.Context, annotations []render.PodAnnotation) error {
	var mu sync.Mutex
	var errs []error
	forEach(annotations, podAnnotationWorkers, func(a render.PodAnnotation) {
		if err := r.annotateRelayPod(ctx, a); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})
	return errors.Join(errs...)
}

// podAnnotationWorkers is how many relay pod annotations a pass writes at once.
const podAnnotationWorkers = 16

// annotateRelayPod writes one relay pod's annotation if it needs it.
func (r *TurnServerReconciler) annotateRelayPod(ctx context.Context, a render.PodAnnotation) error {
	value, err := json.Marshal(a.Value) // as writeMemory compares
	if err != nil {
		return err
	}
	if !r.annotated.needsWrite(a.Pod, a.Pod.Annotations[turnpikev1.AnnotationNodeAddresses], value) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{turnpikev1.AnnotationNodeAddresses: a.Value}}})
	if err != nil {
		return err
	}
	pod := a.Pod.DeepCopy()
	err = r.Client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldOwner))
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("annotating relay pod %s: %w", a.Pod.Name, err)
	}
	if err == nil {
		r.annotated.remember(a.Pod, value, pod.ResourceVersion)
	}
	return nil
}

// updateStatus records the Events of the status change and writes the
// status, only when it changed.
func (r *TurnServerReconciler) updateStatus(ctx context.Context, ts *turnpikev1.TurnServer, st turnpikev1.TurnServerStatus) error {
	recordEvents(r.Recorder, ts, render.TurnServerEvents(&ts.Status, &st))
	if err := applyStatus(ctx, r.Client, &r.written, ts, &ts.Status, &st); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// requestFor is the reconcile request of a TurnServer.
func requestFor(ts *turnpikev1.TurnServer) ctrl.Request {
	return ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ts.Namespace, Name: ts.Name}}
}
