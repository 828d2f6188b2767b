package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"
)

// auditPolicy makes kube-apiserver log what the benchmark counts, and
// little else:
//
//   - every write of the operator with its request and response bodies:
//     the request's size is what it wrote, the response's resourceVersion
//     tells an empty write (nothing changed) from a real one;
//   - every other request of the operator, metadata only (reads);
//   - everyone else's writes to the kinds the operator writes (or may:
//     relay pods), with the response, only to follow those objects'
//     resourceVersions (the DaemonSet controller writes the DaemonSet's
//     status, the kubelet a pod's).
//
// Only the stage ResponseComplete is logged, so a request is one event.
func auditPolicy(operatorUser string) string {
	return fmt.Sprintf(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: RequestResponse
  users: [%[1]q]
  verbs: [create, update, patch, delete, deletecollection]
- level: Metadata
  users: [%[1]q]
- level: RequestResponse
  verbs: [create, update, patch, delete, deletecollection]
  resources:
  - group: ""
    resources: [configmaps, secrets, services, serviceaccounts, pods, pods/status]
  - group: apps
    resources: [daemonsets, daemonsets/status]
  - group: turnpike.dev
    resources: [turnservers, turnservers/status, turncredentials, turncredentials/status]
- level: None
`, operatorUser)
}

// auditEvent is the part of an audit.k8s.io/v1 Event the benchmark reads.
type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		APIGroup    string `json:"apiGroup"`
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestObject  json.RawMessage `json:"requestObject"`
	ResponseObject json.RawMessage `json:"responseObject"`
	Received       time.Time       `json:"requestReceivedTimestamp"`
}

// request is one request of the operator, as the benchmark counts it.
type request struct {
	At       time.Time
	Verb     string
	Resource string // "configmaps", "turnservers/status", ...
	Write    bool
	Lease    bool // a leader-election Lease: counted apart from the reconcilers' writes
	Bytes    int  // request body as logged (JSON); 0 for reads
	Code     int
	Empty    bool // a successful patch or update that left resourceVersion unchanged
}

// auditLog follows kube-apiserver's audit log file and turns the
// operator's events into requests.
type auditLog struct {
	operatorUser string
	path         string
	offset       int64
	// versions is the last resourceVersion seen of each object written by
	// anyone: what an empty write's response is compared with.
	versions map[string]string
}

func newAuditLog(path, operatorUser string) *auditLog {
	return &auditLog{path: path, operatorUser: operatorUser, versions: map[string]string{}}
}

// readNew reads the events appended since the last call, up to the last
// complete line.
func (l *auditLog) readNew() ([]request, error) {
	f, err := os.Open(l.path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return nil, err
	}
	var out []request
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return out, nil // a partial line waits for the next call
		}
		if err != nil {
			return out, err
		}
		l.offset += int64(len(line))
		req, ok, err := l.parse(line)
		if err != nil {
			return out, fmt.Errorf("audit log at byte %d: %w", l.offset, err)
		}
		if ok {
			out = append(out, req)
		}
	}
}

// parse reads one audit event: ok is true for a request of the operator.
// Writes of others only update the resourceVersions followed.
func (l *auditLog) parse(line []byte) (request, bool, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return request{}, false, nil
	}
	var ev auditEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return request{}, false, err
	}
	write := isWrite(ev.Verb)
	code := 0
	if ev.ResponseStatus != nil {
		code = ev.ResponseStatus.Code
	}
	empty := false
	if write && ev.ObjectRef != nil && code >= 200 && code < 300 {
		empty = l.followVersion(ev)
	}
	if ev.User.Username != l.operatorUser {
		return request{}, false, nil
	}
	req := request{At: ev.Received, Verb: ev.Verb, Write: write, Code: code, Empty: empty}
	if ev.ObjectRef != nil {
		req.Resource = ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			req.Resource += "/" + ev.ObjectRef.Subresource
		}
		req.Lease = ev.ObjectRef.APIGroup == "coordination.k8s.io" && ev.ObjectRef.Resource == "leases"
	}
	if write {
		req.Bytes = len(ev.RequestObject)
	}
	return req, true, nil
}

// followVersion records the object's resourceVersion after a successful
// write and says whether the write was empty: a patch or update whose
// response carries the resourceVersion the object already had (the API
// server stored nothing). The first write seen of an object cannot be
// judged and counts as not empty.
func (l *auditLog) followVersion(ev auditEvent) bool {
	ref := ev.ObjectRef
	key := ref.APIGroup + "/" + ref.Resource + "/" + ref.Namespace + "/" + ref.Name
	if ev.Verb == "delete" || ev.Verb == "deletecollection" {
		delete(l.versions, key)
		return false
	}
	var obj struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if json.Unmarshal(ev.ResponseObject, &obj) != nil || obj.Metadata.ResourceVersion == "" {
		return false
	}
	before, seen := l.versions[key]
	l.versions[key] = obj.Metadata.ResourceVersion
	return seen && (ev.Verb == "patch" || ev.Verb == "update") && before == obj.Metadata.ResourceVersion
}

func isWrite(verb string) bool {
	switch verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// writeCount is the writes of one resource and verb.
type writeCount struct {
	Count int `json:"count"`
	Bytes int `json:"bytes"`
	Empty int `json:"empty,omitempty"`
}

// requestCounts is what the operator asked of the API server in a window
// of time.
type requestCounts struct {
	// Writes by "resource verb", leader-election Lease renewals left out.
	Writes      map[string]writeCount `json:"writes"`
	WriteTotal  int                   `json:"writeTotal"`
	BytesTotal  int                   `json:"bytesTotal"`
	LeaseWrites int                   `json:"leaseWrites"`
	Empty       int                   `json:"emptyWrites"`
	Conflicts   int                   `json:"conflicts"`
	// FailedWrites answered with an error other than 409.
	FailedWrites int `json:"failedWrites"`
	Reads        int `json:"reads"`
}

// countRequests sums the requests received in [from, to).
func countRequests(reqs []request, from, to time.Time) requestCounts {
	c := requestCounts{Writes: map[string]writeCount{}}
	for _, r := range reqs {
		if r.At.Before(from) || !r.At.Before(to) {
			continue
		}
		switch {
		case !r.Write:
			c.Reads++
			continue
		case r.Lease:
			c.LeaseWrites++
			continue
		}
		key := r.Resource + " " + r.Verb
		w := c.Writes[key]
		w.Count++
		w.Bytes += r.Bytes
		c.WriteTotal++
		c.BytesTotal += r.Bytes
		if r.Empty {
			w.Empty++
			c.Empty++
		}
		c.Writes[key] = w
		switch {
		case r.Code == 409:
			c.Conflicts++
		case r.Code >= 400 || r.Code == 0:
			c.FailedWrites++
		}
	}
	return c
}

// lastWrite is the time of the operator's last write (Lease renewals left
// out) at or after from, or the zero time.
func lastWrite(reqs []request, from time.Time) time.Time {
	var last time.Time
	for _, r := range reqs {
		if r.Write && !r.Lease && !r.At.Before(from) && r.At.After(last) {
			last = r.At
		}
	}
	return last
}

// writeKeys is the keys of Writes, sorted, for the table.
func (c requestCounts) writeKeys() []string {
	return slices.Sorted(maps.Keys(c.Writes))
}
