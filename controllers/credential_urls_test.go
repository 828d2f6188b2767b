package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/turnpike-dev/turnpike/controllers/render"
)

// TestWokenCredentialIsNotWokenAgain: a credential woken by one change is
// not woken by the next until its pass starts; after the pass remembers
// its choice, only a change that matters wakes it.
func TestWokenCredentialIsNotWokenAgain(t *testing.T) {
	var u urlChoices
	key := types.NamespacedName{Namespace: "ns", Name: "app"}
	always := func(render.URLChoice) bool { return true }
	never := func(render.URLChoice) bool { return false }

	if !u.wakes(key, always) {
		t.Fatal("a credential with no remembered choice was not woken")
	}
	if u.wakes(key, always) {
		t.Error("a credential already woken, its pass not started, was woken again")
	}
	u.forget(key) // its pass starts
	if !u.wakes(key, never) {
		t.Error("a change during a pass (no choice remembered) did not wake the credential")
	}
	u.forget(key)
	u.remember(key, render.URLChoice{}) // that pass ends
	if u.wakes(key, never) {
		t.Error("a change that does not matter woke the credential")
	}
	if !u.wakes(key, always) {
		t.Error("a change that matters did not wake the credential")
	}
}
