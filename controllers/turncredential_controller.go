package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// DefaultStagingDelay is how long a new secret is accepted by relays before
// apps are handed it: longer than a kubelet takes to update a mounted Secret
// (its sync period, one minute by default, plus its cache).
const DefaultStagingDelay = 90 * time.Second

// TurnCredentialReconciler issues a TurnCredential's secret, rotates it, and
// writes the Secret apps read. The TurnServer reconciler folds the same
// state into the relays' credentials.
type TurnCredentialReconciler struct {
	Client client.Client
	// Cache is the cache Client reads; nodes and relay pods are read from
	// its informers without copying. nil lists them through Client.
	Cache cache.Cache
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// StagingDelay is how long relays hold a new secret before apps get it.
	StagingDelay time.Duration
	// NewSecret makes a secret; nil means 32 random bytes.
	NewSecret func() string
	// Recorder records Events on TurnCredentials; nil records none.
	Recorder events.EventRecorder
	// written is what the operator last wrote to each object: its status
	// (applyStatus) or a generated object (applyIfChanged).
	written writeMemory
	// choices is what each credential's URLs were last chosen from.
	choices urlChoices
	// relayNodes is the last pass's relay nodes of each TurnServer.
	relayNodes relayNodesMemo
}

// +kubebuilder:rbac:groups=turnpike.dev,resources=turncredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups=turnpike.dev,resources=turncredentials/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves a TurnCredential's rotation forward and publishes it, in
// four phases: observeCredential reads the TurnServer and the stored state;
// render.Credential advances the state and builds the Secrets from that
// alone; applyCredential writes them; and the status is written on every
// pass, failures included.
func (r *TurnCredentialReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.choices.forget(req.NamespacedName) // before reading: see urlChoices
	tc := &turnpikev1.TurnCredential{}
	if err := r.Client.Get(ctx, req.NamespacedName, tc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	now := r.now()

	obs, err := r.observeCredential(ctx, tc)
	if err != nil {
		return ctrl.Result{}, err
	}
	if obs.StateErr != nil {
		// Never overwrite state we cannot read: that would lock out clients.
		return ctrl.Result{}, r.updateStatus(ctx, tc, render.CredentialStatus(tc, obs.TurnServer, render.CredentialState{}, render.Problems{Load: obs.StateErr}))
	}
	objs, err := render.Credential(tc, obs, now, r.StagingDelay, r.newSecret)
	stored := obs.State
	if err == nil {
		r.choices.remember(req.NamespacedName, objs.URLs)
		stored, err = r.applyCredential(ctx, tc, obs.State, objs)
	}
	// A failed write is shown in the status (Ready=False, SecretWriteFailed)
	// and returned, so the controller logs it and retries with backoff.
	if serr := r.updateStatus(ctx, tc, render.CredentialStatus(tc, obs.TurnServer, stored, render.Problems{Write: err})); serr != nil {
		return ctrl.Result{}, errors.Join(err, fmt.Errorf("writing status: %w", serr))
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: render.NextCredentialEvent(tc, stored, now)}, nil
}

// observeCredential reads the TurnServer a credential is for, its relay
// nodes (unless it names a hostname) and the credential's stored state. A
// state that cannot be read is reported in StateErr, for the status; other
// failed reads are returned.
func (r *TurnCredentialReconciler) observeCredential(ctx context.Context, tc *turnpikev1.TurnCredential) (*render.CredentialObservation, error) {
	obs := &render.CredentialObservation{TurnServer: &turnpikev1.TurnServer{}}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: tc.Namespace, Name: tc.Spec.TurnServerRef.Name}, obs.TurnServer)
	if apierrors.IsNotFound(err) {
		obs.TurnServer = nil
	} else if err != nil {
		return nil, err
	}
	if obs.TurnServer != nil && obs.TurnServer.Spec.Hostname == "" {
		if obs.RelayNodes, err = r.relayNodes.of(ctx, r.cached(), obs.TurnServer); err != nil {
			return nil, err
		}
	}
	obs.State, obs.StateErr = r.loadState(ctx, tc)
	return obs, nil
}

// applyCredential writes the state Secret when the state changed, then the
// Secret apps read. It returns the state that is stored: old when writing
// the new one failed, and then writes nothing else.
func (r *TurnCredentialReconciler) applyCredential(ctx context.Context, tc *turnpikev1.TurnCredential, old render.CredentialState, objs *render.CredentialObjects) (render.CredentialState, error) {
	st := objs.State
	if objs.StateSecret != nil {
		if err := r.Client.Apply(ctx, objs.StateSecret, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			countRotation(old, st, "failure")
			return old, fmt.Errorf("writing Secret %s: %w", render.StateSecretName(tc), err)
		}
		countRotation(old, st, "success")
		log.FromContext(ctx).Info("credential state advanced", "revision", st.Revision, "staged", st.Next != "", "previousValid", st.Previous != "")
	}
	if objs.Output == nil {
		return st, nil
	}
	key := client.ObjectKey{Namespace: tc.Namespace, Name: render.OutputSecretName(tc)}
	if _, err := applyIfChanged(ctx, r.Client, &r.written, key, &corev1.Secret{}, objs.Output, corev1ac.ExtractSecret); err != nil {
		return st, fmt.Errorf("writing Secret %s: %w", render.OutputSecretName(tc), err)
	}
	return st, nil
}

func (r *TurnCredentialReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *TurnCredentialReconciler) newSecret() string {
	if r.NewSecret != nil {
		return r.NewSecret()
	}
	return render.RandomSecret()
}

func (r *TurnCredentialReconciler) loadState(ctx context.Context, tc *turnpikev1.TurnCredential) (render.CredentialState, error) {
	s := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: tc.Namespace, Name: render.StateSecretName(tc)}, s)
	if apierrors.IsNotFound(err) {
		return render.CredentialState{}, nil
	}
	if err != nil {
		return render.CredentialState{}, err
	}
	st, err := render.DecodeCredentialState(s.Data)
	if err != nil {
		return st, fmt.Errorf("Secret %s: %w", s.Name, err)
	}
	return st, nil
}

// countRotation counts the rotation steps between two states.
func countRotation(old, cur render.CredentialState, result string) {
	if old.Current == "" {
		return // the first secret is issued, not rotated
	}
	if cur.Next != "" && old.Next == "" {
		credentialRotations.WithLabelValues("stage", result).Inc()
	}
	if cur.Revision > old.Revision || (result == "failure" && old.Next != "") {
		credentialRotations.WithLabelValues("publish", result).Inc()
	}
}

// updateStatus records the Events of the status change and writes the
// status, only when it changed.
func (r *TurnCredentialReconciler) updateStatus(ctx context.Context, tc *turnpikev1.TurnCredential, st turnpikev1.TurnCredentialStatus) error {
	recordEvents(r.Recorder, tc, render.CredentialEvents(&tc.Status, &st))
	return applyStatus(ctx, r.Client, &r.written, tc, &tc.Status, &st)
}

// SetupWithManager registers the reconciler and what it watches. The
// turnServerRef index is registered by Setup (registerIndexes).
func (r *TurnCredentialReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("turncredential").
		// The rotate annotation does not bump the generation.
		For(&turnpikev1.TurnCredential{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}).
		// Each credential names its own relay nodes (render.CredentialSeed):
		// a change wakes only the credentials whose URLs it can change.
		Watches(&turnpikev1.TurnServer{}, r.turnServerChanges()).
		Watches(&corev1.Node{}, r.nodeChanges()).
		Watches(&corev1.Pod{}, r.relayPodChanges()).
		Complete(r)
}

func (r *TurnCredentialReconciler) cached() cachedObjects {
	return cachedObjects{cache: r.Cache, reader: r.Client}
}
