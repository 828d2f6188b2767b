package render

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

func TestAdvanceCredential(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const staging = 90 * time.Second
	daily := &turnpikev1.Rotation{Interval: metav1.Duration{Duration: 24 * time.Hour}, Overlap: metav1.Duration{Duration: time.Hour}}
	tc := func(rotation *turnpikev1.Rotation, rotate string) *turnpikev1.TurnCredential {
		c := &turnpikev1.TurnCredential{Spec: turnpikev1.TurnCredentialSpec{Rotation: rotation}}
		if rotate != "" {
			c.Annotations = map[string]string{turnpikev1.AnnotationRotate: rotate}
		}
		return c
	}
	steady := CredentialState{Revision: 3, Current: "c", CurrentSince: t0}
	tests := []struct {
		name string
		tc   *turnpikev1.TurnCredential
		st   CredentialState
		now  time.Time
		want CredentialState
	}{
		{"first secret is staged", tc(daily, "x"), CredentialState{}, t0,
			CredentialState{Next: "new", NextPublishAt: t0.Add(staging), RotateRequest: "x"}},
		{"first secret published after staging", tc(daily, "x"), CredentialState{Next: "n", NextPublishAt: t0, RotateRequest: "x"}, t0,
			CredentialState{Revision: 1, Current: "n", CurrentSince: t0, RotateRequest: "x"}},
		{"nothing due", tc(daily, ""), steady, t0.Add(23 * time.Hour), steady},
		{"no schedule never rotates by itself", tc(nil, ""), steady, t0.Add(1000 * time.Hour), steady},
		{"interval passed: stage", tc(daily, ""), steady, t0.Add(24 * time.Hour),
			CredentialState{Revision: 3, Current: "c", CurrentSince: t0, Next: "new", NextPublishAt: t0.Add(24*time.Hour + staging)}},
		{"rotate annotation: stage", tc(nil, "now"), steady, t0.Add(time.Minute),
			CredentialState{Revision: 3, Current: "c", CurrentSince: t0, Next: "new", NextPublishAt: t0.Add(time.Minute + staging), RotateRequest: "now"}},
		{"staged, not yet time", tc(daily, ""), CredentialState{Revision: 3, Current: "c", CurrentSince: t0, Next: "n", NextPublishAt: t0.Add(time.Hour)}, t0.Add(59 * time.Minute),
			CredentialState{Revision: 3, Current: "c", CurrentSince: t0, Next: "n", NextPublishAt: t0.Add(time.Hour)}},
		{"publish: old becomes previous for the overlap", tc(daily, ""), CredentialState{Revision: 3, Current: "c", CurrentSince: t0, Next: "n", NextPublishAt: t0.Add(time.Hour)}, t0.Add(time.Hour),
			CredentialState{Revision: 4, Current: "n", CurrentSince: t0.Add(time.Hour), Previous: "c", PreviousNotAfter: t0.Add(2 * time.Hour)}},
		{"manual rotation without schedule keeps the default overlap", tc(nil, ""), CredentialState{Revision: 1, Current: "c", CurrentSince: t0, Next: "n", NextPublishAt: t0}, t0,
			CredentialState{Revision: 2, Current: "n", CurrentSince: t0, Previous: "c", PreviousNotAfter: t0.Add(defaultManualOverlap)}},
		{"previous valid until its end", tc(daily, ""), CredentialState{Revision: 4, Current: "n", CurrentSince: t0, Previous: "c", PreviousNotAfter: t0.Add(time.Hour)}, t0.Add(time.Hour - time.Nanosecond),
			CredentialState{Revision: 4, Current: "n", CurrentSince: t0, Previous: "c", PreviousNotAfter: t0.Add(time.Hour)}},
		{"previous gone at its end", tc(daily, ""), CredentialState{Revision: 4, Current: "n", CurrentSince: t0, Previous: "c", PreviousNotAfter: t0.Add(time.Hour)}, t0.Add(time.Hour),
			CredentialState{Revision: 4, Current: "n", CurrentSince: t0}},
		{"operator down for days: one rotation, not many", tc(daily, ""), steady, t0.Add(96 * time.Hour),
			CredentialState{Revision: 3, Current: "c", CurrentSince: t0, Next: "new", NextPublishAt: t0.Add(96*time.Hour + staging)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := advanceCredential(tt.tc, tt.st, tt.now, staging, func() string { return "new" })
			if got != tt.want {
				t.Fatalf("\ngot  %+v\nwant %+v", got, tt.want)
			}
			// State must survive the Secret round trip exactly.
			back, err := DecodeCredentialState(got.encode())
			if err != nil || fmt.Sprint(back) != fmt.Sprint(got) {
				t.Fatalf("round trip: %+v, %v", back, err)
			}
		})
	}
}

func TestSameCredentials(t *testing.T) {
	end := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sameEnd := end.Add(0) // a distinct time.Time value for the same instant
	later := end.Add(time.Second)
	bundle := func(gen int64, key string, notAfter *time.Time) *config.Credentials {
		return &config.Credentials{Version: config.Version, Generation: gen, Users: []config.User{
			{Username: "sfu", Key: "current"}, {Username: "sfu", Key: key, NotAfter: notAfter},
		}}
	}
	tests := []struct {
		name string
		a, b *config.Credentials
		want bool
	}{
		{"same keys and windows, other generation", bundle(1, "old", &end), bundle(2, "old", &sameEnd), true},
		{"a key's window moved", bundle(1, "old", &end), bundle(1, "old", &later), false},
		{"a key gained a window", bundle(1, "old", nil), bundle(1, "old", &end), false},
		{"another key", bundle(1, "old", &end), bundle(1, "other", &end), false},
		{"a shared secret added", bundle(1, "old", &end), func() *config.Credentials {
			c := bundle(1, "old", &end)
			c.SharedSecrets = []config.SharedSecret{{Name: "rest#1", Secret: "s", NotAfter: &end}}
			return c
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sameCredentials(tt.a, tt.b)
			if err != nil || got != tt.want {
				t.Fatalf("sameCredentials = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}
