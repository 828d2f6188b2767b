package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const op = "system:serviceaccount:turnpike-system:turnpike-operator"

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// event is one audit log line.
func event(user, verb, group, resource, sub, name, rv string, code int, at time.Time, request string) string {
	resp := "null"
	if rv != "" {
		resp = fmt.Sprintf(`{"metadata":{"name":%q,"resourceVersion":%q}}`, name, rv)
	}
	req := "null"
	if request != "" {
		req = request
	}
	return fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","stage":"ResponseComplete","verb":%q,`+
		`"user":{"username":%q},"objectRef":{"apiGroup":%q,"resource":%q,"subresource":%q,"namespace":"scale","name":%q},`+
		`"responseStatus":{"code":%d},"requestObject":%s,"responseObject":%s,"requestReceivedTimestamp":%q}`,
		verb, user, group, resource, sub, name, code, req, resp, at.Format(time.RFC3339Nano))
}

func TestAuditLogParse(t *testing.T) {
	patch := `{"data":{"relay.yaml":"x"}}`
	for _, tc := range []struct {
		name  string
		lines []string
		want  []request // the last line's request, nil when it is not the operator's
	}{
		{name: "a write of the operator, its size and a first version",
			lines: []string{event(op, "patch", "", "configmaps", "", "cm", "10", 200, t0, patch)},
			want:  []request{{At: t0, Verb: "patch", Resource: "configmaps", Write: true, Bytes: len(patch), Code: 200}}},
		{name: "a patch that left the resourceVersion as it was is empty",
			lines: []string{
				event(op, "create", "", "configmaps", "", "cm", "10", 201, t0, patch),
				event(op, "patch", "", "configmaps", "", "cm", "10", 200, t0, patch)},
			want: []request{{At: t0, Verb: "patch", Resource: "configmaps", Write: true, Bytes: len(patch), Code: 200, Empty: true}}},
		{name: "a patch after someone else's write is compared with that write",
			lines: []string{
				event(op, "create", "apps", "daemonsets", "", "ds", "10", 201, t0, patch),
				event("kcm", "update", "apps", "daemonsets", "status", "ds", "11", 200, t0, patch),
				event(op, "patch", "apps", "daemonsets", "", "ds", "11", 200, t0, patch)},
			want: []request{{At: t0, Verb: "patch", Resource: "daemonsets", Write: true, Bytes: len(patch), Code: 200, Empty: true}}},
		{name: "a patch that changed the object is not empty",
			lines: []string{
				event(op, "create", "", "secrets", "", "s", "10", 201, t0, patch),
				event(op, "patch", "", "secrets", "", "s", "12", 200, t0, patch)},
			want: []request{{At: t0, Verb: "patch", Resource: "secrets", Write: true, Bytes: len(patch), Code: 200}}},
		{name: "a status patch follows the object's version",
			lines: []string{
				event(op, "create", "turnpike.dev", "turnservers", "", "ts", "5", 201, t0, patch),
				event(op, "patch", "turnpike.dev", "turnservers", "status", "ts", "5", 200, t0, patch)},
			want: []request{{At: t0, Verb: "patch", Resource: "turnservers/status", Write: true, Bytes: len(patch), Code: 200, Empty: true}}},
		{name: "a recreated object starts afresh",
			lines: []string{
				event(op, "create", "", "secrets", "", "s", "10", 201, t0, patch),
				event("gc", "delete", "", "secrets", "", "s", "10", 200, t0, ""),
				event(op, "update", "", "secrets", "", "s", "10", 200, t0, patch)},
			want: []request{{At: t0, Verb: "update", Resource: "secrets", Write: true, Bytes: len(patch), Code: 200}}},
		{name: "a conflict is a write, not empty",
			lines: []string{
				event(op, "create", "", "secrets", "", "s", "10", 201, t0, patch),
				event(op, "update", "", "secrets", "", "s", "", 409, t0, patch)},
			want: []request{{At: t0, Verb: "update", Resource: "secrets", Write: true, Bytes: len(patch), Code: 409}}},
		{name: "a Lease renewal", lines: []string{event(op, "update", "coordination.k8s.io", "leases", "", "l", "3", 200, t0, patch)},
			want: []request{{At: t0, Verb: "update", Resource: "leases", Write: true, Lease: true, Bytes: len(patch), Code: 200}}},
		{name: "a read has no size", lines: []string{event(op, "list", "", "nodes", "", "", "", 200, t0, "")},
			want: []request{{At: t0, Verb: "list", Resource: "nodes", Code: 200}}},
		{name: "someone else's request is not counted", lines: []string{event("kcm", "update", "apps", "daemonsets", "status", "ds", "11", 200, t0, patch)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newAuditLog("", op)
			var got []request
			for _, line := range tc.lines {
				req, ok, err := l.parse([]byte(line))
				if err != nil {
					t.Fatal(err)
				}
				got = nil
				if ok {
					got = []request{req}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestAuditLogReadNew reads a file as kube-apiserver appends to it: a
// partial last line waits for the next read.
func TestAuditLogReadNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := newAuditLog(path, op)
	if got, err := l.readNew(); err != nil || len(got) != 0 {
		t.Fatalf("before the file exists: %v, %v", got, err)
	}
	first := event(op, "create", "", "secrets", "", "a", "1", 201, t0, `{}`)
	second := event(op, "create", "", "secrets", "", "b", "2", 201, t0, `{}`)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\n%s", first, second[:20])
	if got, err := l.readNew(); err != nil || len(got) != 1 {
		t.Fatalf("first read: %d requests, %v; want 1", len(got), err)
	}
	fmt.Fprintf(f, "%s\n", second[20:])
	if got, err := l.readNew(); err != nil || len(got) != 1 {
		t.Fatalf("second read: %d requests, %v; want 1", len(got), err)
	}
}

func TestCountRequests(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	reqs := []request{
		{At: at(0), Verb: "patch", Resource: "configmaps", Write: true, Bytes: 100, Code: 200},
		{At: at(1), Verb: "patch", Resource: "configmaps", Write: true, Bytes: 50, Code: 200, Empty: true},
		{At: at(2), Verb: "update", Resource: "secrets", Write: true, Bytes: 10, Code: 409},
		{At: at(3), Verb: "create", Resource: "events", Write: true, Bytes: 5, Code: 500},
		{At: at(4), Verb: "update", Resource: "leases", Write: true, Lease: true, Bytes: 7, Code: 200},
		{At: at(5), Verb: "list", Resource: "nodes", Code: 200},
		{At: at(9), Verb: "patch", Resource: "configmaps", Write: true, Bytes: 1000, Code: 200}, // after the window
	}
	got := countRequests(reqs, at(0), at(9))
	want := requestCounts{
		Writes: map[string]writeCount{
			"configmaps patch": {Count: 2, Bytes: 150, Empty: 1}, "secrets update": {Count: 1, Bytes: 10}, "events create": {Count: 1, Bytes: 5}},
		WriteTotal: 4, BytesTotal: 165, LeaseWrites: 1, Empty: 1, Conflicts: 1, FailedWrites: 1, Reads: 1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if last := lastWrite(reqs, at(0)); !last.Equal(at(9)) {
		t.Errorf("lastWrite = %v, want %v", last, at(9))
	}
	if last := lastWrite(reqs[4:6], at(0)); !last.IsZero() {
		t.Errorf("lastWrite of a Lease renewal and a read = %v, want none", last)
	}
}

func TestSummarizeChanges(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	w := func(s, bytes int) request {
		return request{At: at(s), Verb: "patch", Resource: "configmaps", Write: true, Bytes: bytes, Code: 200}
	}
	for _, tc := range []struct {
		name    string
		reqs    []request
		changes []time.Time
		want    *changeSummary
	}{
		{name: "no changes", reqs: []request{w(0, 1)}},
		{name: "one window each",
			reqs:    []request{w(0, 100), w(1, 100), w(2, 300), w(4, 200)},
			changes: []time.Time{at(0), at(2), at(4)},
			want:    &changeSummary{MeanWrites: 4.0 / 3, MeanBytes: 700.0 / 3, MaxWrites: 2, MaxBytes: 300}},
		{name: "writes before the first change do not count",
			reqs:    []request{w(0, 100), w(5, 10)},
			changes: []time.Time{at(1), at(3)},
			want:    &changeSummary{MeanWrites: 0.5, MeanBytes: 5, MaxWrites: 1, MaxBytes: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summarizeChanges(tc.reqs, tc.changes, at(10))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestQuietSince(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name                  string
		write, start, leading time.Time
		want                  time.Time
	}{
		{name: "the last write", write: at(5), start: at(0), leading: at(-100), want: at(5)},
		{name: "no write yet: the phase's start", start: at(0), leading: at(-100), want: at(0)},
		{name: "a new leader after the last write", write: at(5), start: at(0), leading: at(30), want: at(30)},
	} {
		if got := quietSince(tc.write, tc.start, tc.leading); !got.Equal(tc.want) {
			t.Errorf("%s: quietSince = %v, want %v", tc.name, got, tc.want)
		}
	}
}
