package render

import (
	"fmt"
	"time"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/apimachinery/pkg/api/meta"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

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

// CredentialObservation is what a TurnCredential's pass reads.
type CredentialObservation struct {
	TurnServer *turnpikev1.TurnServer // nil when it does not exist
	State      CredentialState        // as stored; zero before the first
	StateErr   error                  // why the stored state could not be read
	// RelayNodes are the TurnServer's nodes, to choose the credential's
	// URLs from; unread when spec.hostname is set.
	RelayNodes []RelayNode
}

// CredentialObjects are what a pass writes for a TurnCredential.
type CredentialObjects struct {
	State CredentialState // the advanced state
	// StateSecret is nil when the state did not change.
	StateSecret *corev1ac.SecretApplyConfiguration
	// output is the Secret apps read, nil until the first secret is published.
	Output *corev1ac.SecretApplyConfiguration
	// URLs is what Output's URLs were chosen from; zero when there is no Output.
	URLs URLChoice
}

// Credential advances the stored state to now and builds the Secrets
// that hold it. The clock and the secret generator are arguments.
func Credential(tc *turnpikev1.TurnCredential, obs *CredentialObservation, now time.Time, staging time.Duration, newSecret func() string) (*CredentialObjects, error) {
	st := advanceCredential(tc, obs.State, now, staging, newSecret)
	objs := &CredentialObjects{State: st}
	if st != obs.State {
		objs.StateSecret = desiredStateSecret(tc, st)
	}
	if st.Current == "" { // nothing for apps until the first secret is published
		return objs, nil
	}
	var urls []string
	if obs.TurnServer != nil {
		urls, objs.URLs = URIsFor(obs.TurnServer, obs.RelayNodes, CredentialSeed(tc))
	}
	var err error
	objs.Output, err = desiredOutputSecret(tc, st, urls)
	return objs, err
}

// CredentialSeed orders the relay nodes for a credential's iceServers.json:
// each credential gets its own spec.urlNodesPerFamily nodes, so the apps of
// many credentials spread over every node, and one node's change rewrites
// only the Secrets of the credentials that name it (about credentials x
// urlNodesPerFamily / nodes of them), not every credential's.
func CredentialSeed(tc *turnpikev1.TurnCredential) string {
	return "TurnCredential " + tc.Namespace + "/" + tc.Name
}

// problems are what went wrong in a reconcile of a TurnCredential.
type Problems struct {
	Load  error // the state Secret could not be read
	Write error // a Secret could not be written
}

// CredentialStatus is a TurnCredential's status for a state and problems.
func CredentialStatus(tc *turnpikev1.TurnCredential, ts *turnpikev1.TurnServer, st CredentialState, p Problems) turnpikev1.TurnCredentialStatus {
	out := turnpikev1.TurnCredentialStatus{
		ObservedGeneration: tc.Generation,
		Conditions:         append([]metav1.Condition(nil), tc.Status.Conditions...),
		CurrentRevision:    st.Revision,
		SecretName:         OutputSecretName(tc),
	}
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&out.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: tc.Generation,
		})
	}
	out.LastRotationTime = apiTime(st.CurrentSince)
	out.NextRotationTime = apiTime(NextRotation(tc, st))
	switch {
	case p.Load != nil:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonStateUnreadable, p.Load.Error()+"; not rotating until it is fixed or deleted")
	case p.Write != nil:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonSecretWriteFailed, p.Write.Error()+"; retrying")
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
