//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

const (
	rotateCred = "e2e-rotate"
	rotateUser = "bob"
	// The shortest overlap the API allows.
	rotateOverlap = 2 * time.Minute
)

// testRotation: scenario 4. A call runs on a static password; the password
// is rotated (turnpike.dev/rotate); the running call carries on, a new call
// with the new password works, the old password still allocates inside the
// overlap and is refused once the overlap has passed. The call keeps
// running past that point: its allocation and permissions were made
// inside the overlap (pion refreshes permissions every 2 minutes, so the
// first refresh also falls inside it).
func testRotation(t *testing.T, w *world) {
	ctx := context.Background()
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: rotateCred, Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{
			TurnServerRef: turnpikev1.LocalObjectReference{Name: serverName}, Type: turnpikev1.CredentialStatic, Username: rotateUser,
			Rotation: &turnpikev1.Rotation{Interval: metav1.Duration{Duration: 24 * time.Hour}, Overlap: metav1.Duration{Duration: rotateOverlap}},
		},
	}
	if err := w.cp.client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	var oldPass string
	eventually(t, time.Minute, "the rotating credential's Secret", func() error {
		s, err := w.cs.CoreV1().Secrets(ns).Get(ctx, rotateCred, metav1.GetOptions{})
		if err != nil {
			return err
		}
		oldPass = string(s.Data["password"])
		return nil
	})
	oldICE := w.iceServers(t, rotateCred)
	w.waitAllocates(t, rotateUser, oldPass)

	held := w.startPionCall(t, oldICE, 0)
	select {
	case r := <-held.answer:
		if r.Error != "" {
			t.Fatalf("held call: %s", r.Error)
		}
	case <-time.After(time.Minute):
		t.Fatal("the held call did not connect")
	}

	if err := w.cp.client.Get(ctx, client.ObjectKeyFromObject(tc), tc); err != nil {
		t.Fatal(err)
	}
	tc.Annotations = map[string]string{turnpikev1.AnnotationRotate: time.Now().UTC().Format(time.RFC3339)}
	if err := w.cp.client.Update(ctx, tc); err != nil {
		t.Fatal(err)
	}
	var newPass string
	eventually(t, time.Minute, "the new password in the Secret", func() error {
		newPass = w.secret(t, rotateCred, "password")
		if newPass == oldPass {
			return fmt.Errorf("still the old password")
		}
		return nil
	})
	published := time.Now()

	offer, answer := w.startPionCall(t, w.iceServers(t, rotateCred), 10).wait(t, 2*time.Minute)
	checkRelayed(t, "call with the new password", offer, answer, nodeAPublic, nodeBPublic)
	if err := w.tryAllocate(t, rotateUser, oldPass); err != nil {
		t.Errorf("the old password was refused inside the overlap: %v", err)
	}

	// The old password must stop working within a little more than the
	// overlap after it was replaced, and not before.
	for {
		if err := w.tryAllocate(t, rotateUser, oldPass); err != nil {
			// A refusal, not a lost packet: pion's server answers a
			// wrong MESSAGE-INTEGRITY with 400.
			if !strings.Contains(err.Error(), "error response") {
				t.Fatalf("allocating with the old password: %v", err)
			}
			since := time.Since(published)
			if since < rotateOverlap-5*time.Second {
				t.Errorf("the old password was refused %s after the rotation, before the %s overlap ended: %v", since, rotateOverlap, err)
			}
			t.Logf("the old password was refused %s after the rotation: %v", since.Round(time.Second), err)
			break
		}
		if time.Since(published) > rotateOverlap+30*time.Second {
			t.Fatalf("the old password still works %s after the rotation", time.Since(published))
		}
		time.Sleep(2 * time.Second)
	}

	w.signal.stopCall(held.id)
	select {
	case r := <-held.offer:
		if r.Error != "" {
			t.Fatalf("held call: %s", r.Error)
		}
		// 10 echoes a second; the rotation must not have paused the call.
		if r.MaxGapMS > 2000 || r.Received < 600 {
			t.Errorf("held call through the rotation: %d echoes, longest gap %d ms", r.Received, r.MaxGapMS)
		}
		t.Logf("held call: %d echoes, longest gap %d ms, through %s", r.Received, r.MaxGapMS, r.Local.Address)
	case <-time.After(30 * time.Second):
		t.Fatal("the held call did not report")
	}
}

// tryAllocate allocates on node-a from client1 with a static password.
func (w *world) tryAllocate(t *testing.T, user, pass string) error {
	t.Helper()
	return tryAllocate(w.lab.client1, turnAddr(nodeAPublic), user, pass)
}

// waitAllocates waits until the relays accept a new password: the Secret
// for apps appears after the staging delay, but the kubelet (here the
// agent) still has to deliver the relays' bundle.
func (w *world) waitAllocates(t *testing.T, user, pass string) {
	t.Helper()
	eventually(t, time.Minute, "the relay to accept "+user, func() error {
		return w.tryAllocate(t, user, pass)
	})
}
