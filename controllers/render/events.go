package render

import (
	"fmt"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Reasons of Events that are not condition reasons.
const (
	EventRotationStarted  = "RotationStarted"
	EventRotationFinished = "RotationFinished"
)

// Event is one Event to record on the reconciled object, for a person
// running kubectl describe.
type Event struct {
	Warning bool
	Reason  string
	Note    string
}

// warningReasons are the TurnServer Degraded reasons that get an Event.
var warningReasons = map[string]bool{
	ReasonApplyFailed: true, ReasonObserveFailed: true, ReasonPortConflict: true,
	ReasonTLSSecretMissing: true, ReasonAddressNotPublic: true,
}

// TurnServerEvents are the Events of a status change: one when Degraded
// turns to a new reason. Events follow changes, not reconciles, so a
// problem that lasts is one Event, however often the TurnServer is
// reconciled (the recorder also folds repeats into a series).
func TurnServerEvents(old, cur *turnpikev1.TurnServerStatus) []Event {
	was := meta.FindStatusCondition(old.Conditions, turnpikev1.ConditionDegraded)
	now := meta.FindStatusCondition(cur.Conditions, turnpikev1.ConditionDegraded)
	if now == nil || now.Status != metav1.ConditionTrue || !warningReasons[now.Reason] {
		return nil
	}
	if was != nil && was.Status == now.Status && was.Reason == now.Reason {
		return nil
	}
	return []Event{{Warning: true, Reason: now.Reason, Note: now.Message}}
}

// CredentialEvents are the Events of a TurnCredential's status change: a
// rotation staged or published, and a failure of a new kind.
func CredentialEvents(old, cur *turnpikev1.TurnCredentialStatus) []Event {
	var out []Event
	wasRotating := conditionReason(old.Conditions, turnpikev1.ConditionProgressing) == ReasonRotating
	if p := meta.FindStatusCondition(cur.Conditions, turnpikev1.ConditionProgressing); p != nil &&
		p.Reason == ReasonRotating && !wasRotating && cur.CurrentRevision > 0 {
		out = append(out, Event{Reason: EventRotationStarted, Note: p.Message})
	}
	if cur.CurrentRevision > old.CurrentRevision {
		reason := EventRotationFinished
		if old.CurrentRevision == 0 {
			reason = ReasonIssued // the first secret: nothing was rotated
		}
		out = append(out, Event{Reason: reason, Note: fmt.Sprintf("apps get revision %d from Secret %s", cur.CurrentRevision, cur.SecretName)})
	}
	if r := meta.FindStatusCondition(cur.Conditions, turnpikev1.ConditionReady); r != nil &&
		(r.Reason == ReasonSecretWriteFailed || r.Reason == ReasonStateUnreadable) &&
		conditionReason(old.Conditions, turnpikev1.ConditionReady) != r.Reason {
		out = append(out, Event{Warning: true, Reason: r.Reason, Note: r.Message})
	}
	return out
}

// conditionReason is the reason of the condition typ, or "".
func conditionReason(conds []metav1.Condition, typ string) string {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return c.Reason
	}
	return ""
}
