package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// Reasons of Events that are not condition reasons.
const (
	EventRotationStarted  = "RotationStarted"
	EventRotationFinished = "RotationFinished"
)

// statusEvent is one Event to record on the reconciled object, for a person
// running kubectl describe.
type statusEvent struct {
	warning bool
	reason  string
	note    string
}

// warningReasons are the TurnServer Degraded reasons that get an Event.
var warningReasons = map[string]bool{
	ReasonApplyFailed: true, ReasonObserveFailed: true, ReasonPortConflict: true,
	ReasonTLSSecretMissing: true, ReasonAddressNotPublic: true,
}

// turnServerEvents are the Events of a status change: one when Degraded
// turns to a new reason. Events follow changes, not reconciles, so a
// problem that lasts is one Event, however often the TurnServer is
// reconciled (the recorder also folds repeats into a series).
func turnServerEvents(old, cur *turnpikev1.TurnServerStatus) []statusEvent {
	was := meta.FindStatusCondition(old.Conditions, turnpikev1.ConditionDegraded)
	now := meta.FindStatusCondition(cur.Conditions, turnpikev1.ConditionDegraded)
	if now == nil || now.Status != metav1.ConditionTrue || !warningReasons[now.Reason] {
		return nil
	}
	if was != nil && was.Status == now.Status && was.Reason == now.Reason {
		return nil
	}
	return []statusEvent{{warning: true, reason: now.Reason, note: now.Message}}
}

// credentialEvents are the Events of a TurnCredential's status change: a
// rotation staged or published, and a failure of a new kind.
func credentialEvents(old, cur *turnpikev1.TurnCredentialStatus) []statusEvent {
	var out []statusEvent
	wasRotating := conditionReason(old.Conditions, turnpikev1.ConditionProgressing) == ReasonRotating
	if p := meta.FindStatusCondition(cur.Conditions, turnpikev1.ConditionProgressing); p != nil &&
		p.Reason == ReasonRotating && !wasRotating && cur.CurrentRevision > 0 {
		out = append(out, statusEvent{reason: EventRotationStarted, note: p.Message})
	}
	if cur.CurrentRevision > old.CurrentRevision {
		reason := EventRotationFinished
		if old.CurrentRevision == 0 {
			reason = ReasonIssued // the first secret: nothing was rotated
		}
		out = append(out, statusEvent{reason: reason, note: fmt.Sprintf("apps get revision %d from Secret %s", cur.CurrentRevision, cur.SecretName)})
	}
	if r := meta.FindStatusCondition(cur.Conditions, turnpikev1.ConditionReady); r != nil &&
		(r.Reason == ReasonSecretWriteFailed || r.Reason == ReasonStateUnreadable) &&
		conditionReason(old.Conditions, turnpikev1.ConditionReady) != r.Reason {
		out = append(out, statusEvent{warning: true, reason: r.Reason, note: r.Message})
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

// recordEvents records evs on obj; rec nil records nothing.
func recordEvents(rec events.EventRecorder, obj runtime.Object, evs []statusEvent) {
	if rec == nil {
		return
	}
	for _, e := range evs {
		typ := corev1.EventTypeNormal
		if e.warning {
			typ = corev1.EventTypeWarning
		}
		rec.Eventf(obj, nil, typ, e.reason, "Reconcile", "%s", e.note)
	}
}
