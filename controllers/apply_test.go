package controllers

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
			var m writeMemory
			if tc.remembered {
				m.remember(at("1"), js(applied), "2")
			}
			if got := m.needsWrite(at(tc.cacheRV), tc.cache, js(tc.wanted)); got != tc.write {
				t.Errorf("needsWrite = %v, want %v", got, tc.write)
			}
		})
	}
	var m writeMemory
	for i := range maxRemembered + 1 {
		ts := at("1")
		ts.UID = types.UID(strconv.Itoa(i))
		m.remember(ts, js(applied), "2")
	}
	if len(m.applied) > maxRemembered {
		t.Errorf("remembers %d statuses, bound is %d", len(m.applied), maxRemembered)
	}
}

// TestStatusMemoryTwoWritesInFlight: the operator applies S1 on top of
// version 1 (making 2) and, the cache still at 1, S2 (making 3). When the
// cache shows 2, whose status is S1, S2 is not applied again; when it shows
// 3, or a version someone else wrote, the cache decides.
func TestStatusMemoryTwoWritesInFlight(t *testing.T) {
	type status struct{ Ready int }
	js := func(s status) []byte { b, _ := json.Marshal(s); return b }
	at := func(rv string) *turnpikev1.TurnServer {
		return &turnpikev1.TurnServer{ObjectMeta: metav1.ObjectMeta{UID: types.UID("ts-1"), ResourceVersion: rv}}
	}
	var m writeMemory
	m.remember(at("1"), js(status{1}), "2")
	m.remember(at("1"), js(status{2}), "3")
	for _, tc := range []struct {
		name    string
		cacheRV string
		cache   status
		wanted  status
		write   bool
	}{
		{"cache at the first write, S2 again", "2", status{1}, status{2}, false},
		{"cache at the first write, S3", "2", status{1}, status{3}, true},
		{"cache still before both, S2 again", "1", status{0}, status{2}, false},
		{"cache caught up", "3", status{2}, status{2}, false},
		{"someone else wrote", "4", status{9}, status{2}, true},
	} {
		if got := m.needsWrite(at(tc.cacheRV), tc.cache, js(tc.wanted)); got != tc.write {
			t.Errorf("%s: needsWrite = %v, want %v", tc.name, got, tc.write)
		}
	}
	// A third write on top of the first one's version.
	m.remember(at("2"), js(status{3}), "5")
	for _, rv := range []string{"1", "2", "3"} {
		if m.needsWrite(at(rv), status{}, js(status{3})) {
			t.Errorf("cache at %s: S3 applied again", rv)
		}
	}
}

// TestWriteMemoryForeignWriteBetween: a relay pod turns ready (version 2)
// while the operator annotates the pod it saw at version 1 (making 3). The
// cache then shows version 2, without the annotation: it is not written
// again. A version that does not parse leaves it to the cache.
func TestWriteMemoryForeignWriteBetween(t *testing.T) {
	at := func(rv string) *turnpikev1.TurnServer {
		return &turnpikev1.TurnServer{ObjectMeta: metav1.ObjectMeta{UID: types.UID("pod-1"), ResourceVersion: rv}}
	}
	want := []byte(`"addresses"`)
	var m writeMemory
	m.remember(at("1"), want, "3")
	if m.needsWrite(at("2"), "", want) {
		t.Error("cache at the kubelet's version 2: the annotation written at 3 is written again")
	}
	if !m.needsWrite(at("4"), "", want) {
		t.Error("cache at 4, without the annotation: someone removed it, and it is not put back")
	}
	m.remember(at("1"), want, "not-a-number")
	if !m.needsWrite(at("2"), "", want) {
		t.Error("an opaque resourceVersion: the cache must decide")
	}
}

// staleReader plays a cache that has not seen the latest writes: Get
// returns the object as it was when frozen.
type staleReader struct {
	client.Client
	frozen client.Object
}

func (s *staleReader) Get(ctx context.Context, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
	if s.frozen == nil {
		return s.Client.Get(ctx, key, o, opts...)
	}
	s.frozen.(*corev1.Secret).DeepCopyInto(o.(*corev1.Secret))
	return nil
}

// TestApplyIfChangedWhileTheCacheLags applies a Secret on a real API
// server while the reader still shows it as it was: the same data is not
// applied a second time, and data that only equals the stale copy is.
func TestApplyIfChangedWhileTheCacheLags(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cache-lag")
	key := client.ObjectKey{Namespace: ns, Name: "s"}
	secret := func(v string) *corev1ac.SecretApplyConfiguration {
		return corev1ac.Secret("s", ns).WithData(map[string][]byte{"k": []byte(v)})
	}
	var written writeMemory
	c := &staleReader{Client: env.Client}
	apply := func(v string) bool {
		t.Helper()
		applied, err := applyIfChanged(ctx, c, &written, key, &corev1.Secret{}, secret(v), corev1ac.ExtractSecret)
		if err != nil {
			t.Fatal(err)
		}
		return applied
	}
	apply("1")
	c.frozen = &corev1.Secret{}
	if err := env.Client.Get(ctx, key, c.frozen); err != nil {
		t.Fatal(err)
	}
	if !apply("2") {
		t.Fatal("new data was not applied")
	}
	if apply("2") {
		t.Fatal("the same data was applied again while the reader lagged: an empty patch")
	}
	if !apply("1") {
		t.Fatal("data that equals only the stale copy was not applied")
	}
}
