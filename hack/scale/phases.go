package main

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// phaseResult is what one phase cost the operator.
type phaseResult struct {
	Name     string        `json:"name"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"durationNs"`
	// Settled is false when the operator was still writing at the
	// phase's deadline.
	Settled         bool                  `json:"settled"`
	Requests        requestCounts         `json:"requests"`
	ReconcileErrors float64               `json:"reconcileErrors"`
	Panics          float64               `json:"panics"`
	Restarts        int                   `json:"operatorRestarts"`
	CPUSeconds      float64               `json:"cpuSeconds"`
	PeakRSS         int64                 `json:"peakRSSBytes"` // of the samples taken during the phase
	Largest         map[string]objectSize `json:"largestObjects"`
	// Changes is how many single changes the phase made (node address
	// changes, rotations, node deletions); PerChange their cost.
	Changes   int            `json:"changes,omitempty"`
	PerChange *changeSummary `json:"perChange,omitempty"`
	// ReadyAfterLastPod: the TurnServer was first seen Ready, all nodes
	// ready, this long after the last relay pod was marked ready.
	ReadyAfterLastPod *time.Duration `json:"readyAfterLastPodNs,omitempty"`
	Notes             []string       `json:"notes,omitempty"`
}

// changeSummary is the operator's writes per single change: the mean over
// the phase (writes ÷ changes), and the most any one change's window (from
// that change to the next) held.
type changeSummary struct {
	MeanWrites float64 `json:"meanWrites"`
	MeanBytes  float64 `json:"meanBytes"`
	MaxWrites  int     `json:"maxWrites"`
	MaxBytes   int     `json:"maxBytes"`
}

// summarizeChanges splits [changes[0], end) at each change and sums the
// writes of each window.
func summarizeChanges(reqs []request, changes []time.Time, end time.Time) *changeSummary {
	if len(changes) == 0 {
		return nil
	}
	s := &changeSummary{}
	total := countRequests(reqs, changes[0], end)
	s.MeanWrites = float64(total.WriteTotal) / float64(len(changes))
	s.MeanBytes = float64(total.BytesTotal) / float64(len(changes))
	for i, from := range changes {
		to := end
		if i+1 < len(changes) {
			to = changes[i+1]
		}
		c := countRequests(reqs, from, to)
		s.MaxWrites = max(s.MaxWrites, c.WriteTotal)
		s.MaxBytes = max(s.MaxBytes, c.BytesTotal)
	}
	return s
}

// bench is a running benchmark: the cluster, the operator, the stand-in
// kubelets and the audit log read so far.
type bench struct {
	o        options
	cl       *cluster
	op       *operator
	kubelets *kubelets
	audit    *auditLog
	requests []request
	nodes    int // nodes that exist now
}

// readAudit appends the audit log's new events.
func (b *bench) readAudit() {
	reqs, err := b.audit.readNew()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
	}
	b.requests = append(b.requests, reqs...)
}

// waitQuiet waits until the operator has been leading and written
// nothing for o.quiet (Lease renewals aside) and ready, if not nil, says
// yes; false when o.settle passes first. Leading matters after an
// outage: an operator that is restarting or waiting for the Lease writes
// nothing, and the TurnServer still says what it said before.
func (b *bench) waitQuiet(ctx context.Context, from time.Time, ready func() bool) bool {
	deadline := time.Now().Add(b.o.settle)
	for ctx.Err() == nil {
		b.readAudit()
		leading := b.op.leading()
		last := quietSince(lastWrite(b.requests, from), from, leading)
		if !leading.IsZero() && time.Since(last) >= b.o.quiet && (ready == nil || ready()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Second)
	}
	return false
}

// quietSince is when the operator's quiet began: its last write, the
// phase's start, or when it became leader, whichever is latest.
func quietSince(lastWrite, phaseStart, leading time.Time) time.Time {
	last := phaseStart
	for _, t := range []time.Time{lastWrite, leading} {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// phase runs act, waits for the operator to settle when settle is set,
// and measures. act returns the times of its single changes, if any.
func (b *bench) phase(ctx context.Context, name string, settle bool, act func(r *phaseResult) ([]time.Time, error)) (phaseResult, error) {
	fmt.Fprintf(os.Stderr, "scale: phase %s\n", name)
	before := b.op.sample()
	start := before.At
	r := phaseResult{Name: name, Start: start, Settled: true}
	changes, err := act(&r)
	if err != nil {
		return phaseResult{}, fmt.Errorf("phase %s: %w", name, err)
	}
	r.Changes = len(changes)
	if settle {
		r.Settled = b.waitQuiet(ctx, start, b.serverReady(ctx))
	}
	time.Sleep(time.Second) // the audit log holds a request once it has completed
	b.readAudit()
	after := b.op.sample()
	r.Duration = after.At.Sub(start)
	r.Requests = countRequests(b.requests, start, after.At)
	r.PerChange = summarizeChanges(b.requests, changes, after.At)
	r.ReconcileErrors = after.ReconcileErrors - before.ReconcileErrors
	r.Panics = after.Panics - before.Panics
	r.Restarts = after.Restarts - before.Restarts
	r.CPUSeconds = (after.CPU - before.CPU).Seconds()
	for _, s := range b.op.samplesBetween(start, after.At) {
		r.PeakRSS = max(r.PeakRSS, s.RSS)
	}
	if r.Largest, err = largestObjects(ctx, b.cl.c); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "scale: phase %s: %s, %d writes, settled %v\n", name, r.Duration.Round(time.Second), r.Requests.WriteTotal, r.Settled)
	return r, nil
}

// serverReady says whether the TurnServer is Ready on every node there is.
func (b *bench) serverReady(ctx context.Context) func() bool {
	return func() bool {
		s, err := readServer(ctx, b.cl.c)
		return err == nil && s.Ready && s.ReadyNodes == int64(b.nodes)
	}
}

// rollout creates the TurnCredentials and the TurnServer and waits for
// relays to be ready on every node.
func (b *bench) rollout(ctx context.Context) (phaseResult, error) {
	return b.phase(ctx, "rollout", true, func(r *phaseResult) ([]time.Time, error) {
		for i := range b.o.credentials {
			if err := b.cl.c.Create(ctx, turnCredential(i)); err != nil {
				return nil, err
			}
		}
		if err := b.cl.c.Create(ctx, turnServer()); err != nil {
			return nil, err
		}
		readyAt, ok := waitServerReady(ctx, b.cl.c, b.nodes, b.kubelets.readyPods, b.o.settle)
		if !ok {
			return nil, fmt.Errorf("the TurnServer was not Ready on %d nodes, and nothing moved for %s (%d relay pods ready)", b.nodes, b.o.settle, b.kubelets.readyPods())
		}
		d := readyAt.Sub(b.kubelets.lastReadyAt())
		r.ReadyAfterLastPod = &d
		return nil, nil
	})
}

// steady changes nothing for o.steady.
func (b *bench) steady(ctx context.Context) (phaseResult, error) {
	return b.phase(ctx, "steady", false, func(*phaseResult) ([]time.Time, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(b.o.steady):
		}
		return nil, nil
	})
}

// paced calls change(i) for i < o.changes, one every o.pace, and returns
// when each call was made.
func (b *bench) paced(ctx context.Context, change func(i int) error) ([]time.Time, error) {
	var at []time.Time
	for i := range b.o.changes {
		at = append(at, time.Now())
		if err := change(i); err != nil {
			return at, err
		}
		select {
		case <-ctx.Done():
			return at, ctx.Err()
		case <-time.After(b.o.pace):
		}
	}
	return at, nil
}

// changeNode picks the node of change i: spread over all nodes, away from
// the ones node deletions take (the last o.changes).
func (b *bench) changeNode(i int) int { return i * (b.o.nodes - b.o.changes) / b.o.changes }

// addressChanges moves one node at a time to a new ExternalIP, as a cloud
// provider's node controller reports a new public address.
func (b *bench) addressChanges(ctx context.Context) (phaseResult, error) {
	return b.phase(ctx, "address changes", true, func(*phaseResult) ([]time.Time, error) {
		return b.paced(ctx, func(i int) error {
			n := b.changeNode(i)
			node := &corev1.Node{}
			if err := b.cl.c.Get(ctx, client.ObjectKey{Name: nodeName(n)}, node); err != nil {
				return err
			}
			node.Status.Addresses = nodeAddresses(n, 1)
			return b.cl.c.Status().Update(ctx, node)
		})
	})
}

// rotations forces one rotation of each TurnCredential in turn, and waits
// out the staging delay that publishes it.
func (b *bench) rotations(ctx context.Context) (phaseResult, error) {
	return b.phase(ctx, "rotations", true, func(*phaseResult) ([]time.Time, error) {
		at, err := b.paced(ctx, func(i int) error {
			tc := &unstructured.Unstructured{}
			tc.SetGroupVersionKind(turnCredentialGVK)
			tc.SetNamespace(workloadNS)
			tc.SetName(credentialName(i % b.o.credentials))
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"turnpike.dev/rotate":"scale-%d-%d"}}}`, time.Now().Unix(), i)
			return b.cl.c.Patch(ctx, tc, client.RawPatch(types.MergePatchType, []byte(patch)))
		})
		if err == nil {
			time.Sleep(b.o.staging) // the last rotation is published only then
		}
		return at, err
	})
}

// nodeDeletions deletes the last o.changes nodes, one at a time.
func (b *bench) nodeDeletions(ctx context.Context) (phaseResult, error) {
	return b.phase(ctx, "node deletions", true, func(*phaseResult) ([]time.Time, error) {
		return b.paced(ctx, func(i int) error {
			b.nodes--
			return b.cl.c.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName(b.o.nodes - 1 - i)}})
		})
	})
}

// outage stops kube-apiserver for o.outage and starts it again on the same
// etcd, then waits for the operator to settle.
func (b *bench) outage(ctx context.Context) (phaseResult, error) {
	return b.phase(ctx, "api outage", true, func(r *phaseResult) ([]time.Time, error) {
		stopping := time.Now()
		if err := b.cl.env.StopAPIServer(); err != nil {
			// envtest sends SIGKILL when SIGTERM has not ended it in
			// time: an outage all the same.
			r.Notes = append(r.Notes, fmt.Sprintf("stopping kube-apiserver: %v (then SIGKILL)", err))
		}
		stopped := time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(b.o.outage):
		}
		if err := b.cl.env.StartAPIServer(); err != nil {
			return nil, err
		}
		r.Notes = append(r.Notes, fmt.Sprintf("kube-apiserver stopping %s, stopped %s, starting %s",
			stopped.Sub(stopping).Round(time.Second), b.o.outage, time.Since(stopped.Add(b.o.outage)).Round(time.Second)))
		return nil, nil
	})
}
