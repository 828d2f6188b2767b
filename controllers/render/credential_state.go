package render

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// CredentialState is a TurnCredential's secret material over time. It lives
// in a Secret the operator owns (see StateSecretName), which is the source of
// truth: the status only mirrors it, so an operator that restarts at any
// point neither skips nor repeats a rotation.
//
// A rotation has two steps, so that no client is ever handed a secret the
// relays do not accept yet, nor loses one they still hold:
//  1. stage: a new secret is made and added to the relays' credentials
//     (Next), while apps still get the current one;
//  2. publish, once the kubelets have had time to deliver it to every relay
//     (the staging delay): apps get the new secret, and the old one stays
//     valid on the relays for the overlap (Previous, until PreviousNotAfter).
type CredentialState struct {
	Revision         int64
	Current          string
	CurrentSince     time.Time
	Previous         string
	PreviousNotAfter time.Time
	Next             string
	NextPublishAt    time.Time
	// RotateRequest is the last turnpike.dev/rotate value acted on.
	RotateRequest string
}

// defaultManualOverlap is how long the previous secret stays valid after a
// manual rotation of a credential that has no rotation schedule.
const defaultManualOverlap = 10 * time.Minute

// advanceCredential moves state forward to now: it stages the first secret,
// stages a new one when a rotation is due or asked for, publishes a staged
// one whose time has come, and forgets a previous one whose overlap ended.
// The first secret is staged too: handing apps a secret before relays have
// it locks out their first clients just as a rotation would.
// It is pure: the clock and the secret generator are arguments.
func advanceCredential(tc *turnpikev1.TurnCredential, st CredentialState, now time.Time, staging time.Duration, newSecret func() string) CredentialState {
	request := tc.Annotations[turnpikev1.AnnotationRotate]
	first := st.Current == "" && st.Next == ""
	if first || (st.Next == "" && (request != st.RotateRequest || rotationDue(tc, st, now))) {
		st.Next, st.NextPublishAt, st.RotateRequest = newSecret(), now.Add(staging), request
	}
	if st.Next != "" && !now.Before(st.NextPublishAt) {
		if st.Current != "" {
			st.Previous, st.PreviousNotAfter = st.Current, now.Add(Overlap(tc))
		}
		st.Current, st.CurrentSince, st.Next, st.NextPublishAt = st.Next, now, "", time.Time{}
		st.Revision++
	}
	if st.Previous != "" && !now.Before(st.PreviousNotAfter) {
		st.Previous, st.PreviousNotAfter = "", time.Time{}
	}
	return st
}

func rotationDue(tc *turnpikev1.TurnCredential, st CredentialState, now time.Time) bool {
	r := tc.Spec.Rotation
	return r != nil && !now.Before(st.CurrentSince.Add(r.Interval.Duration))
}

func Overlap(tc *turnpikev1.TurnCredential) time.Duration {
	if r := tc.Spec.Rotation; r != nil {
		return r.Overlap.Duration
	}
	return defaultManualOverlap
}

// NextRotation is when the next rotation is staged, or zero without a schedule.
func NextRotation(tc *turnpikev1.TurnCredential, st CredentialState) time.Time {
	if r := tc.Spec.Rotation; r != nil && st.Current != "" {
		return st.CurrentSince.Add(r.Interval.Duration)
	}
	return time.Time{}
}

// NextCredentialEvent is how long until advanceCredential has work to do
// again, or 0 when only a spec or annotation change can bring any.
func NextCredentialEvent(tc *turnpikev1.TurnCredential, st CredentialState, now time.Time) time.Duration {
	var soonest time.Time
	for _, t := range []time.Time{st.NextPublishAt, st.PreviousNotAfter, NextRotation(tc, st)} {
		if !t.IsZero() && (soonest.IsZero() || t.Before(soonest)) {
			soonest = t
		}
	}
	if soonest.IsZero() {
		return 0
	}
	return max(soonest.Sub(now), time.Second)
}

// RandomSecret is 32 bytes from crypto/rand, URL-safe base64 without padding
// so it can be pasted into any config file.
func RandomSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the OS's CSPRNG failing is not recoverable
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Keys of the state Secret.
const (
	stateRevision         = "revision"
	stateCurrent          = "current"
	stateCurrentSince     = "currentSince"
	statePrevious         = "previous"
	statePreviousNotAfter = "previousNotAfter"
	stateNext             = "next"
	stateNextPublishAt    = "nextPublishAt"
	stateRotateRequest    = "rotateRequest"
)

// encode renders the state as Secret data; empty fields are left out.
func (st CredentialState) encode() map[string][]byte {
	d := map[string][]byte{}
	put := func(k, v string) {
		if v != "" {
			d[k] = []byte(v)
		}
	}
	putTime := func(k string, t time.Time) {
		if !t.IsZero() {
			d[k] = []byte(t.UTC().Format(time.RFC3339Nano))
		}
	}
	put(stateRevision, strconv.FormatInt(st.Revision, 10))
	put(stateCurrent, st.Current)
	putTime(stateCurrentSince, st.CurrentSince)
	put(statePrevious, st.Previous)
	putTime(statePreviousNotAfter, st.PreviousNotAfter)
	put(stateNext, st.Next)
	putTime(stateNextPublishAt, st.NextPublishAt)
	put(stateRotateRequest, st.RotateRequest)
	return d
}

// DecodeCredentialState reads state Secret data; missing data is the zero state.
func DecodeCredentialState(d map[string][]byte) (CredentialState, error) {
	st := CredentialState{
		Current:       string(d[stateCurrent]),
		Previous:      string(d[statePrevious]),
		Next:          string(d[stateNext]),
		RotateRequest: string(d[stateRotateRequest]),
	}
	var err error
	if v := d[stateRevision]; len(v) > 0 {
		if st.Revision, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return st, fmt.Errorf("%s: %w", stateRevision, err)
		}
	}
	for key, t := range map[string]*time.Time{
		stateCurrentSince: &st.CurrentSince, statePreviousNotAfter: &st.PreviousNotAfter, stateNextPublishAt: &st.NextPublishAt,
	} {
		if v := d[key]; len(v) > 0 {
			if *t, err = time.Parse(time.RFC3339Nano, string(v)); err != nil {
				return st, fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	return st, nil
}
