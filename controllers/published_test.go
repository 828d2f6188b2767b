package controllers

import (
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/event"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

func TestURLsChangedPredicate(t *testing.T) {
	ts := func(urls []string, ready int32) *turnpikev1.TurnServer {
		return &turnpikev1.TurnServer{Status: turnpikev1.TurnServerStatus{URLs: urls, ReadyNodes: ready}}
	}
	a, b := []string{"turn:192.0.2.1:3478?transport=udp"}, []string{"turn:192.0.2.2:3478?transport=udp"}
	tests := []struct {
		name     string
		old, cur *turnpikev1.TurnServer
		want     bool
	}{
		{"other status only", ts(a, 1), ts(a, 2), false},
		{"other URLs", ts(a, 1), ts(b, 1), true},
		{"URLs gone", ts(a, 1), ts(nil, 0), true},
	}
	for _, tt := range tests {
		if got := urlsChanged.Update(event.UpdateEvent{ObjectOld: tt.old, ObjectNew: tt.cur}); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	if !urlsChanged.Create(event.CreateEvent{Object: ts(nil, 0)}) || !urlsChanged.Delete(event.DeleteEvent{Object: ts(a, 1)}) {
		t.Error("a TurnServer appearing or going must wake its credentials")
	}
}
