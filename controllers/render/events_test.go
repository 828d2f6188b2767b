package render

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

func cond(typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: reason + " message"}
}

func reasons(evs []Event) []string {
	var out []string
	for _, e := range evs {
		kind := "Normal"
		if e.Warning {
			kind = "Warning"
		}
		out = append(out, kind+"/"+e.Reason)
	}
	return out
}

func TestTurnServerEvents(t *testing.T) {
	degraded := func(s metav1.ConditionStatus, reason string) turnpikev1.TurnServerStatus {
		return turnpikev1.TurnServerStatus{Conditions: []metav1.Condition{cond(turnpikev1.ConditionDegraded, s, reason)}}
	}
	for _, tt := range []struct {
		name     string
		old, cur turnpikev1.TurnServerStatus
		want     []string
	}{
		{"new TurnServer, fine", turnpikev1.TurnServerStatus{}, degraded(metav1.ConditionFalse, ReasonAsExpected), nil},
		{"new TurnServer, port conflict", turnpikev1.TurnServerStatus{}, degraded(metav1.ConditionTrue, ReasonPortConflict), []string{"Warning/PortConflict"}},
		{"apply starts failing", degraded(metav1.ConditionFalse, ReasonAsExpected), degraded(metav1.ConditionTrue, ReasonApplyFailed), []string{"Warning/ApplyFailed"}},
		{"apply still failing", degraded(metav1.ConditionTrue, ReasonApplyFailed), degraded(metav1.ConditionTrue, ReasonApplyFailed), nil},
		{"TLS Secret gone", degraded(metav1.ConditionTrue, ReasonAddressNotPublic), degraded(metav1.ConditionTrue, ReasonTLSSecretMissing), []string{"Warning/TLSSecretMissing"}},
		{"address not public", degraded(metav1.ConditionFalse, ReasonAsExpected), degraded(metav1.ConditionTrue, ReasonAddressNotPublic), []string{"Warning/AddressNotPublic"}},
		{"recovered", degraded(metav1.ConditionTrue, ReasonApplyFailed), degraded(metav1.ConditionFalse, ReasonAsExpected), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := reasons(TurnServerEvents(&tt.old, &tt.cur)); !slices.Equal(got, tt.want) {
				t.Errorf("events %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCredentialEvents(t *testing.T) {
	status := func(revision int64, ready, progressing string) turnpikev1.TurnCredentialStatus {
		return turnpikev1.TurnCredentialStatus{CurrentRevision: revision, Conditions: []metav1.Condition{
			cond(turnpikev1.ConditionReady, metav1.ConditionUnknown, ready),
			cond(turnpikev1.ConditionProgressing, metav1.ConditionUnknown, progressing),
		}}
	}
	for _, tt := range []struct {
		name     string
		old, cur turnpikev1.TurnCredentialStatus
		want     []string
	}{
		{"first secret staged", turnpikev1.TurnCredentialStatus{}, status(0, ReasonStaging, ReasonRotating), nil},
		{"first secret published", status(0, ReasonStaging, ReasonRotating), status(1, ReasonIssued, ReasonIdle), []string{"Normal/Issued"}},
		{"rotation staged", status(1, ReasonIssued, ReasonIdle), status(1, ReasonIssued, ReasonRotating), []string{"Normal/RotationStarted"}},
		{"still staged", status(1, ReasonIssued, ReasonRotating), status(1, ReasonIssued, ReasonRotating), nil},
		{"rotation published", status(1, ReasonIssued, ReasonRotating), status(2, ReasonIssued, ReasonIdle), []string{"Normal/RotationFinished"}},
		{"write fails", status(2, ReasonIssued, ReasonIdle), status(2, ReasonSecretWriteFailed, ReasonIdle), []string{"Warning/SecretWriteFailed"}},
		{"write still fails", status(2, ReasonSecretWriteFailed, ReasonIdle), status(2, ReasonSecretWriteFailed, ReasonIdle), nil},
		{"state unreadable", status(2, ReasonIssued, ReasonIdle), status(0, ReasonStateUnreadable, ReasonIdle), []string{"Warning/StateUnreadable"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := reasons(CredentialEvents(&tt.old, &tt.cur)); !slices.Equal(got, tt.want) {
				t.Errorf("events %v, want %v", got, tt.want)
			}
		})
	}
}
