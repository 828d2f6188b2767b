package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
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
	// RelayImage is used when a TurnServer does not name one: the operator's own image.
	RelayImage string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// statusPoller reads the /status of relays that discover their address
	// with STUN (see discoverSTUNAddresses).
	statusPoller *relayStatusPoller
	// tls reads the TLS Secrets that listeners name.
	tls *tlsSecrets
}

// +kubebuilder:rbac:groups=turnpike.dev,resources=turnservers,verbs=get;list;watch
// +kubebuilder:rbac:groups=turnpike.dev,resources=turnservers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=turnpike.dev,resources=turncredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps;secrets;serviceaccounts;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes;pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile brings one TurnServer's generated objects and status in line with its spec.
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
		return ctrl.Result{}, err
	}
	// A failed write is shown in the status (Degraded, ApplyFailed) and
	// returned, so the controller logs it and retries with backoff.
	obs.applyErr = r.applyRelayObjects(ctx, ts, obs)
	status := computeStatus(ts, obs)
	if obs.applyErr == nil {
		if obs.applyErr = r.applyDNSEndpoint(ctx, ts, obs); obs.applyErr != nil {
			status = computeStatus(ts, obs)
		}
	}
	if err := r.updateStatus(ctx, ts, status); err != nil {
		return ctrl.Result{}, errors.Join(obs.applyErr, fmt.Errorf("writing status: %w", err))
	}
	if obs.applyErr != nil {
		return ctrl.Result{}, obs.applyErr
	}
	return ctrl.Result{RequeueAfter: r.nextVisit(obs)}, nil
}

// nextVisit is when to reconcile again without an event, or 0 for never:
// when a key in the relay bundle expires (relays stop accepting it on their
// own; the bundle is tidied then). Addresses that relays discover with STUN
// bring their own event (relayStatusPoller).
func (r *TurnServerReconciler) nextVisit(obs *observation) time.Duration {
	if obs.credentialsExpire.IsZero() {
		return 0
	}
	return max(obs.credentialsExpire.Sub(r.now()), time.Second)
}

func (r *TurnServerReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// observe gathers what the status and the generated objects depend on.
func (r *TurnServerReconciler) observe(ctx context.Context, ts *turnpikev1.TurnServer) (*observation, error) {
	var nodes corev1.NodeList
	// Nodes and relay pods are read, never changed, so they are listed
	// without copying: a deep copy of every node per reconcile is most of
	// what a reconcile allocates in a large cluster.
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var all turnpikev1.TurnServerList
	if err := r.Client.List(ctx, &all); err != nil {
		return nil, err
	}
	obs := &observation{
		nodes:     selectedNodes(ts, nodes.Items),
		addresses: map[string]nodeAddresses{},
		conflict:  findPortConflict(ts, all.Items, nodes.Items),
	}
	for _, n := range obs.nodes {
		obs.addresses[n.Name] = resolveNodeAddresses(ts, n)
	}
	var err error
	if obs.missingTLSKeys, err = r.checkTLSSecrets(ctx, ts); err != nil {
		return nil, err
	}
	if obs.pods, err = relayPods(ctx, r.Client, ts); err != nil {
		return nil, err
	}
	obs.readyPods = readyNodes(obs.pods)
	r.discoverSTUNAddresses(ts, obs)
	return obs, nil
}

// applyRelayObjects applies every generated object that differs from what is
// live. The DaemonSet is held back while an older TurnServer owns our ports.
func (r *TurnServerReconciler) applyRelayObjects(ctx context.Context, ts *turnpikev1.TurnServer, obs *observation) error {
	key := client.ObjectKey{Namespace: ts.Namespace, Name: relayName(ts)}
	older, err := r.olderRelaysMayRun(ctx, key)
	if err != nil {
		return err
	}
	var legacyNodes map[string]nodeAddresses
	if older {
		legacyNodes = obs.addresses
	}
	cfg := renderRelayConfig(ts, legacyNodes)
	cm, err := desiredConfigMap(ts, cfg)
	if err != nil {
		return err
	}
	creds, expires, err := r.relayCredentials(ctx, ts)
	if err != nil {
		return err
	}
	obs.credentialsExpire = expires
	secret, err := desiredCredentialSecret(ts, creds)
	if err != nil {
		return err
	}

	secretKey := client.ObjectKey{Namespace: ts.Namespace, Name: credentialSecretName(ts)}
	type step struct {
		kind  string
		apply func() (bool, error)
	}
	steps := []step{
		{"ServiceAccount", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, key, &corev1.ServiceAccount{}, desiredServiceAccount(ts), corev1ac.ExtractServiceAccount)
		}},
		{"ConfigMap", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, key, &corev1.ConfigMap{}, cm, corev1ac.ExtractConfigMap)
		}},
		{"Secret", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, secretKey, &corev1.Secret{}, secret, corev1ac.ExtractSecret)
		}},
		{"Service", func() (bool, error) {
			return applyIfChanged(ctx, r.Client, key, &corev1.Service{}, desiredMetricsService(ts), corev1ac.ExtractService)
		}},
	}
	if obs.conflict == nil {
		steps = append(steps, step{"DaemonSet", func() (bool, error) {
			ds := desiredDaemonSet(ts, r.RelayImage, cfg.SocketHash())
			return applyIfChanged(ctx, r.Client, key, &appsv1.DaemonSet{}, ds, appsv1ac.ExtractDaemonSet)
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
	if err := r.annotateRelayPods(ctx, obs); err != nil {
		return err
	}

	ds := &appsv1.DaemonSet{}
	switch err := r.Client.Get(ctx, key, ds); {
	case err == nil:
		obs.daemonSet = ds
	case !apierrors.IsNotFound(err):
		return err
	}
	return nil
}

// olderRelaysMayRun reports whether relays of a release from before per-pod
// node entries may still run: the live relay.yaml does not name the node
// file yet, and the DaemonSet has not finished rolling out a pod template
// with the node volume. Such a relay refuses a relay.yaml that names the
// node file (an unknown field to it) and then misses every change, new
// credentials included, until it is replaced; so until the rollout ends,
// relay.yaml keeps listing every node, as before. A new TurnServer has no
// such relays, and once relay.yaml names the node file it keeps doing so.
func (r *TurnServerReconciler) olderRelaysMayRun(ctx context.Context, key client.ObjectKey) (bool, error) {
	cm := &corev1.ConfigMap{}
	switch err := r.Client.Get(ctx, key, cm); {
	case err == nil:
		if live, err := config.ParseRelay([]byte(cm.Data[config.RelayFile])); err == nil && live.Addresses.NodeFile != "" {
			return false, nil
		}
	case !apierrors.IsNotFound(err):
		return false, err
	}
	ds := &appsv1.DaemonSet{}
	switch err := r.Client.Get(ctx, key, ds); {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return !rolledOutWithNodeVolume(ds), nil
}

// rolledOutWithNodeVolume reports whether every pod of ds runs a template
// that mounts the node's entry.
func rolledOutWithNodeVolume(ds *appsv1.DaemonSet) bool {
	mounted := slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == nodeVolumeName })
	s := ds.Status
	return mounted && s.ObservedGeneration >= ds.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled
}

// relayCredentials is the relay's credentials.yaml: the long-term keys and
// shared secrets of every TurnCredential of this TurnServer. Its generation
// goes up by one whenever its content changes. expires is the soonest time a
// key in it stops being valid, when the bundle should be tidied, or zero.
func (r *TurnServerReconciler) relayCredentials(ctx context.Context, ts *turnpikev1.TurnServer) (bundle *config.Credentials, expires time.Time, err error) {
	var tcs turnpikev1.TurnCredentialList
	if err := r.Client.List(ctx, &tcs, client.InNamespace(ts.Namespace), client.MatchingFields{turnServerRefIndex: ts.Name}); err != nil {
		return nil, time.Time{}, err
	}
	var entries []credentialEntry
	for i := range tcs.Items {
		tc := &tcs.Items[i]
		if !tc.DeletionTimestamp.IsZero() {
			continue
		}
		s := &corev1.Secret{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: tc.Namespace, Name: stateSecretName(tc)}, s)
		if apierrors.IsNotFound(err) {
			continue // not issued yet
		} else if err != nil {
			return nil, time.Time{}, err
		}
		st, err := decodeCredentialState(s.Data)
		if err != nil {
			log.FromContext(ctx).Error(err, "skipping unreadable credential state", "turnCredential", tc.Name)
			continue
		}
		entries = append(entries, credentialEntry{tc: tc, st: st})
		if t := st.PreviousNotAfter; !t.IsZero() && (expires.IsZero() || t.Before(expires)) {
			expires = t
		}
	}
	bundle = credentialBundle(ts.Spec.Realm, entries)
	bundle.Generation, err = r.bundleGeneration(ctx, ts, bundle)
	return bundle, expires, err
}

// bundleGeneration keeps the live bundle's generation when the content is
// the same, and adds one when it changed.
func (r *TurnServerReconciler) bundleGeneration(ctx context.Context, ts *turnpikev1.TurnServer, bundle *config.Credentials) (int64, error) {
	live := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ts.Namespace, Name: credentialSecretName(ts)}, live)
	if apierrors.IsNotFound(err) {
		return 1, nil
	} else if err != nil {
		return 0, err
	}
	old, err := config.ParseCredentials(live.Data[config.CredentialsFile])
	if err != nil {
		return 1, nil // unreadable: replace it
	}
	same, err := sameCredentials(old, bundle)
	if err != nil {
		return 0, err
	}
	if same {
		return old.Generation, nil
	}
	return old.Generation + 1, nil
}

// sameCredentials reports whether two bundles hold the same keys and secrets
// with the same windows, whatever their generations. It compares what the
// relays read, the serialized bytes: reflection-based equality panics on the
// time.Time inside a key's NotAfter, which every rotation overlap has.
func sameCredentials(a, b *config.Credentials) (bool, error) {
	x, y := *a, *b
	x.Generation, y.Generation = 0, 0
	xb, err := config.Marshal(&x)
	if err != nil {
		return false, err
	}
	yb, err := config.Marshal(&y)
	if err != nil {
		return false, err
	}
	return bytes.Equal(xb, yb), nil
}

// checkTLSSecrets reports TLS listeners whose Secret is missing or lacks a
// certificate or key. Such a relay cannot open that listener.
func (r *TurnServerReconciler) checkTLSSecrets(ctx context.Context, ts *turnpikev1.TurnServer) ([]string, error) {
	var problems []string
	for _, l := range tlsListeners(ts) {
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

// relayPods lists a TurnServer's relay pods. They are the cache's own
// objects (not copied): do not change them.
func relayPods(ctx context.Context, c client.Reader, ts *turnpikev1.TurnServer) ([]corev1.Pod, error) {
	var pods corev1.PodList
	err := c.List(ctx, &pods, client.InNamespace(ts.Namespace), client.MatchingLabels(selectorLabels(ts)), client.UnsafeDisableDeepCopy)
	return pods.Items, err
}

// readyNodes maps node names to whether the relay pod there is ready. A
// terminating pod is not: its relay is draining.
func readyNodes(pods []corev1.Pod) map[string]bool {
	ready := map[string]bool{}
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName != "" && p.DeletionTimestamp.IsZero() && podReady(p) {
			ready[p.Spec.NodeName] = true
		}
	}
	return ready
}

// annotateRelayPods writes each relay pod's node addresses into its
// turnpike.dev/node-addresses annotation, which its relay reads through a
// downward-API file, where it differs. So one node's new address is one
// small write to one pod, which only that node's kubelet syncs. The merge
// patch carries no resourceVersion: the pod's other changes (status) cannot
// make it conflict.
func (r *TurnServerReconciler) annotateRelayPods(ctx context.Context, obs *observation) error {
	for i := range obs.pods {
		p := &obs.pods[i]
		a, selected := obs.addresses[p.Spec.NodeName]
		if !selected || !p.DeletionTimestamp.IsZero() {
			continue
		}
		want := nodeAddressesAnnotation(a)
		if p.Annotations[turnpikev1.AnnotationNodeAddresses] == want {
			continue
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{turnpikev1.AnnotationNodeAddresses: want}}})
		if err != nil {
			return err
		}
		err = r.Client.Patch(ctx, p.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldOwner))
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("annotating relay pod %s: %w", p.Name, err)
		}
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// updateStatus writes the status only when it changed.
func (r *TurnServerReconciler) updateStatus(ctx context.Context, ts *turnpikev1.TurnServer, st turnpikev1.TurnServerStatus) error {
	return applyStatus(ctx, r.Client, ts, &ts.Status, &st)
}

// requestFor is the reconcile request of a TurnServer.
func requestFor(ts *turnpikev1.TurnServer) ctrl.Request {
	return ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ts.Namespace, Name: ts.Name}}
}
