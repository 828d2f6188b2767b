package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// DefaultStagingDelay is how long a new secret is accepted by relays before
// apps are handed it: longer than a kubelet takes to update a mounted Secret
// (its sync period, one minute by default, plus its cache).
const DefaultStagingDelay = 90 * time.Second

// Condition reasons of a TurnCredential.
const (
	ReasonIssued             = "Issued"
	ReasonStaging            = "Staging"
	ReasonTurnServerNotFound = "TurnServerNotFound"
	ReasonStateUnreadable    = "StateUnreadable"
	ReasonSecretWriteFailed  = "SecretWriteFailed"
	ReasonRotating           = "Rotating"
	ReasonIdle               = "Idle"
)

// TurnCredentialReconciler issues a TurnCredential's secret, rotates it, and
// writes the Secret apps read. The TurnServer reconciler folds the same
// state into the relays' credentials.
type TurnCredentialReconciler struct {
	Client client.Client
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// StagingDelay is how long relays hold a new secret before apps get it.
	StagingDelay time.Duration
	// NewSecret makes a secret; nil means 32 random bytes.
	NewSecret func() string
	// Recorder records Events on TurnCredentials; nil records none.
	Recorder events.EventRecorder
}

// +kubebuilder:rbac:groups=turnpike.dev,resources=turncredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups=turnpike.dev,resources=turncredentials/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves a TurnCredential's rotation forward and publishes it, in
// four phases: observeCredential reads the TurnServer and the stored state;
// renderCredential advances the state and builds the Secrets from that
// alone; applyCredential writes them; and the status is written on every
// pass, failures included.
func (r *TurnCredentialReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
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
	if obs.stateErr != nil {
		// Never overwrite state we cannot read: that would lock out clients.
		return ctrl.Result{}, r.updateStatus(ctx, tc, credentialStatus(tc, obs.ts, credentialState{}, problems{load: obs.stateErr}))
	}
	objs, err := renderCredential(tc, obs, now, r.StagingDelay, r.newSecret)
	stored := obs.state
	if err == nil {
		stored, err = r.applyCredential(ctx, tc, obs.state, objs)
	}
	// A failed write is shown in the status (Ready=False, SecretWriteFailed)
	// and returned, so the controller logs it and retries with backoff.
	if serr := r.updateStatus(ctx, tc, credentialStatus(tc, obs.ts, stored, problems{write: err})); serr != nil {
		return ctrl.Result{}, errors.Join(err, fmt.Errorf("writing status: %w", serr))
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: nextCredentialEvent(tc, stored, now)}, nil
}

// credentialObservation is what a TurnCredential's pass reads.
type credentialObservation struct {
	ts       *turnpikev1.TurnServer // nil when it does not exist
	state    credentialState        // as stored; zero before the first
	stateErr error                  // why the stored state could not be read
}

// observeCredential reads the TurnServer a credential is for and the
// credential's stored state. A state that cannot be read is reported in
// stateErr, for the status; other failed reads are returned.
func (r *TurnCredentialReconciler) observeCredential(ctx context.Context, tc *turnpikev1.TurnCredential) (*credentialObservation, error) {
	obs := &credentialObservation{ts: &turnpikev1.TurnServer{}}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: tc.Namespace, Name: tc.Spec.TurnServerRef.Name}, obs.ts)
	if apierrors.IsNotFound(err) {
		obs.ts = nil
	} else if err != nil {
		return nil, err
	}
	obs.state, obs.stateErr = r.loadState(ctx, tc)
	return obs, nil
}

// credentialObjects are what a pass writes for a TurnCredential.
type credentialObjects struct {
	state credentialState // the advanced state
	// stateSecret is nil when the state did not change.
	stateSecret *corev1ac.SecretApplyConfiguration
	// output is the Secret apps read, nil until the first secret is published.
	output *corev1ac.SecretApplyConfiguration
}

// renderCredential advances the stored state to now and builds the Secrets
// that hold it. The clock and the secret generator are arguments.
func renderCredential(tc *turnpikev1.TurnCredential, obs *credentialObservation, now time.Time, staging time.Duration, newSecret func() string) (*credentialObjects, error) {
	st := advanceCredential(tc, obs.state, now, staging, newSecret)
	objs := &credentialObjects{state: st}
	if st != obs.state {
		objs.stateSecret = desiredStateSecret(tc, st)
	}
	if st.Current == "" { // nothing for apps until the first secret is published
		return objs, nil
	}
	var urls []string
	if obs.ts != nil {
		urls = obs.ts.Status.URLs
	}
	var err error
	objs.output, err = desiredOutputSecret(tc, st, urls)
	return objs, err
}

// applyCredential writes the state Secret when the state changed, then the
// Secret apps read. It returns the state that is stored: old when writing
// the new one failed, and then writes nothing else.
func (r *TurnCredentialReconciler) applyCredential(ctx context.Context, tc *turnpikev1.TurnCredential, old credentialState, objs *credentialObjects) (credentialState, error) {
	st := objs.state
	if objs.stateSecret != nil {
		if err := r.Client.Apply(ctx, objs.stateSecret, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			countRotation(old, st, "failure")
			return old, fmt.Errorf("writing Secret %s: %w", stateSecretName(tc), err)
		}
		countRotation(old, st, "success")
		log.FromContext(ctx).Info("credential state advanced", "revision", st.Revision, "staged", st.Next != "", "previousValid", st.Previous != "")
	}
	if objs.output == nil {
		return st, nil
	}
	key := client.ObjectKey{Namespace: tc.Namespace, Name: outputSecretName(tc)}
	if _, err := applyIfChanged(ctx, r.Client, key, &corev1.Secret{}, objs.output, corev1ac.ExtractSecret); err != nil {
		return st, fmt.Errorf("writing Secret %s: %w", outputSecretName(tc), err)
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
	return randomSecret()
}

func (r *TurnCredentialReconciler) loadState(ctx context.Context, tc *turnpikev1.TurnCredential) (credentialState, error) {
	s := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: tc.Namespace, Name: stateSecretName(tc)}, s)
	if apierrors.IsNotFound(err) {
		return credentialState{}, nil
	}
	if err != nil {
		return credentialState{}, err
	}
	st, err := decodeCredentialState(s.Data)
	if err != nil {
		return st, fmt.Errorf("Secret %s: %w", s.Name, err)
	}
	return st, nil
}

// countRotation counts the rotation steps between two states.
func countRotation(old, cur credentialState, result string) {
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

// problems are what went wrong in a reconcile of a TurnCredential.
type problems struct {
	load  error // the state Secret could not be read
	write error // a Secret could not be written
}

// credentialStatus is a TurnCredential's status for a state and problems.
func credentialStatus(tc *turnpikev1.TurnCredential, ts *turnpikev1.TurnServer, st credentialState, p problems) turnpikev1.TurnCredentialStatus {
	out := turnpikev1.TurnCredentialStatus{
		ObservedGeneration: tc.Generation,
		Conditions:         append([]metav1.Condition(nil), tc.Status.Conditions...),
		CurrentRevision:    st.Revision,
		SecretName:         outputSecretName(tc),
	}
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&out.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: tc.Generation,
		})
	}
	out.LastRotationTime = apiTime(st.CurrentSince)
	out.NextRotationTime = apiTime(nextRotation(tc, st))
	switch {
	case p.load != nil:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonStateUnreadable, p.load.Error()+"; not rotating until it is fixed or deleted")
	case p.write != nil:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonSecretWriteFailed, p.write.Error()+"; retrying")
	case st.Current == "":
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonStaging,
			fmt.Sprintf("relays are loading the first secret; Secret %s is written at %s", out.SecretName, st.NextPublishAt.UTC().Format(time.RFC3339)))
	case ts == nil:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonTurnServerNotFound,
			fmt.Sprintf("TurnServer %s not found in namespace %s: no relay accepts this credential", tc.Spec.TurnServerRef.Name, tc.Namespace))
	default:
		set(turnpikev1.ConditionReady, metav1.ConditionTrue, ReasonIssued, fmt.Sprintf("revision %d in Secret %s", st.Revision, out.SecretName))
	}
	if st.Next != "" {
		set(turnpikev1.ConditionProgressing, metav1.ConditionTrue, ReasonRotating,
			fmt.Sprintf("new secret staged on relays; apps get it at %s", st.NextPublishAt.UTC().Format(time.RFC3339)))
	} else {
		set(turnpikev1.ConditionProgressing, metav1.ConditionFalse, ReasonIdle, "")
	}
	return out
}

// apiTime is t as the API server stores a metav1.Time: whole seconds, UTC;
// nil for the zero time. A time with nanoseconds would never equal the
// stored one, and every reconcile would send a patch that changes nothing.
func apiTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	at := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &at
}

// updateStatus records the Events of the status change and writes the
// status, only when it changed.
func (r *TurnCredentialReconciler) updateStatus(ctx context.Context, tc *turnpikev1.TurnCredential, st turnpikev1.TurnCredentialStatus) error {
	recordEvents(r.Recorder, tc, credentialEvents(&tc.Status, &st))
	return applyStatus(ctx, r.Client, tc, &tc.Status, &st)
}

// SetupWithManager registers the reconciler and what it watches. The
// turnServerRef index is registered by SetupIndexes.
func (r *TurnCredentialReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("turncredential").
		// The rotate annotation does not bump the generation.
		For(&turnpikev1.TurnCredential{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}).
		// A TurnServer appearing, going, or publishing other URLs; not its
		// other status changes, which would wake every credential of it.
		Watches(&turnpikev1.TurnServer{}, handler.EnqueueRequestsFromMapFunc(r.credentialsOfTurnServer),
			builder.WithPredicates(urlsChanged)).
		Complete(r)
}

// urlsChanged lets through the TurnServer events that change what a
// TurnCredential renders: creation, deletion, and other status.urls.
var urlsChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*turnpikev1.TurnServer)
		cur, okCur := e.ObjectNew.(*turnpikev1.TurnServer)
		return !okOld || !okCur || !slices.Equal(old.Status.URLs, cur.Status.URLs)
	},
}

func (r *TurnCredentialReconciler) credentialsOfTurnServer(ctx context.Context, o client.Object) []reconcile.Request {
	var list turnpikev1.TurnCredentialList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()),
		client.MatchingFields{turnServerRefIndex: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing the TurnCredentials of a TurnServer", "turnServer", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}
