package controllers

import (
	"encoding/json"
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// TestStatusMemory: while the cache still shows the object as it was when
// the operator applied a status, the next status is compared with what was
// applied (the same status is not applied twice: an empty patch), and a
// status that only equals the stale cache is still written; once the cache
// shows another version, the cache decides (an older operator's write
// during an upgrade is seen and corrected).
func TestStatusMemory(t *testing.T) {
	type status struct{ Ready bool }
	js := func(s status) []byte { b, _ := json.Marshal(s); return b }
	old, applied := status{false}, status{true}
	at := func(rv string) *turnpikev1.TurnServer {
		return &turnpikev1.TurnServer{ObjectMeta: metav1.ObjectMeta{UID: types.UID("ts-1"), ResourceVersion: rv}}
	}
	for _, tc := range []struct {
		name          string
		remembered    bool   // applied on top of resourceVersion "1"
		cacheRV       string // what the cache shows now
		cache, wanted status
		write         bool
	}{
		{"never written, cache equal", false, "1", old, old, false},
		{"never written, cache differs", false, "1", old, applied, true},
		{"cache not caught up, same status again", true, "1", old, applied, false},
		{"cache not caught up, back to what it shows", true, "1", old, old, true},
		{"cache caught up with the write", true, "2", applied, applied, false},
		{"someone wrote after us", true, "3", old, applied, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m statusMemory
			if tc.remembered {
				m.remember(at("1"), js(applied))
			}
			if got := m.needsWrite(at(tc.cacheRV), tc.cache, js(tc.wanted)); got != tc.write {
				t.Errorf("needsWrite = %v, want %v", got, tc.write)
			}
		})
	}
	var m statusMemory
	for i := range maxRemembered + 1 {
		ts := at("1")
		ts.UID = types.UID(strconv.Itoa(i))
		m.remember(ts, js(applied))
	}
	if len(m.applied) > maxRemembered {
		t.Errorf("remembers %d statuses, bound is %d", len(m.applied), maxRemembered)
	}
}
