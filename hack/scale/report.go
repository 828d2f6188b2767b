package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything a run measured, as written to the JSON file.
type report struct {
	Started     time.Time     `json:"started"`
	Nodes       int           `json:"nodes"`
	Credentials int           `json:"credentials"`
	Operator    string        `json:"operator"` // binary and the tree its CRDs and RBAC came from
	Commit      string        `json:"commit,omitempty"`
	Options     string        `json:"options"`
	Phases      []phaseResult `json:"phases"`
	PeakRSS     int64         `json:"peakRSSBytes"` // VmHWM of every operator process
	Targets     []target      `json:"targets"`
}

// target is one of the goals set for 10,000 nodes.
type target struct {
	Goal  string `json:"goal"`
	Value string `json:"value"`
	Met   bool   `json:"met"`
}

const (
	maxObjectBytes     = 256 << 10
	maxChangeWrites    = 5
	maxChangeBytes     = 64 << 10
	maxPeakRSS         = 256 << 20
	maxReadyAfterPods  = 10 * time.Second
	outagePhase        = "api outage"
	steadyPhase        = "steady"
	rolloutPhase       = "rollout"
	nodeChangeCategory = "address changes, node deletions"
)

// nodeChangePhases are the phases whose single changes are node changes.
var nodeChangePhases = []string{"address changes", "node deletions"}

// evaluate checks a run against the goals. A phase that did not run
// leaves its goals unmet ("not measured").
func evaluate(phases []phaseResult, peakRSS int64) []target {
	var largest objectSize
	var largestKind string
	var panics, empty, errorsOutside float64
	var steadyWrites = -1
	var readyAfter *time.Duration
	// The node-change goal is judged on the busiest window from one change
	// to the next (a change that rewrites every credential's Secret counts
	// in full), and the mean is shown beside it.
	var meanWrites, meanBytes float64 = -1, -1
	worstWrites, worstBytes := -1, -1
	var unsettled []string // node-change phases whose figures stop short
	for _, p := range phases {
		for kind, o := range p.Largest {
			if o.Bytes > largest.Bytes {
				largest, largestKind = o, kind
			}
		}
		panics += p.Panics
		empty += float64(p.Requests.Empty)
		if p.Name != outagePhase {
			errorsOutside += p.ReconcileErrors
		}
		switch {
		case p.Name == steadyPhase:
			steadyWrites = p.Requests.WriteTotal
		case p.Name == rolloutPhase:
			readyAfter = p.ReadyAfterLastPod
		case slices.Contains(nodeChangePhases, p.Name) && p.PerChange != nil:
			meanWrites = max(meanWrites, p.PerChange.MeanWrites)
			meanBytes = max(meanBytes, p.PerChange.MeanBytes)
			worstWrites = max(worstWrites, p.PerChange.MaxWrites)
			worstBytes = max(worstBytes, p.PerChange.MaxBytes)
			if !p.Settled {
				unsettled = append(unsettled, p.Name)
			}
		}
	}
	change := target{Goal: "one node change: ≤ 5 writes, ≤ 64 KiB written (the busiest change; " + nodeChangeCategory + ")",
		Value: fmt.Sprintf("busiest %d writes, %s; mean %.1f writes, %s", worstWrites, kib(worstBytes), meanWrites, kib(int(meanBytes))),
		Met:   worstWrites >= 0 && worstWrites <= maxChangeWrites && worstBytes <= maxChangeBytes && len(unsettled) == 0}
	if len(unsettled) > 0 {
		// The operator never finished: what it wrote so far says nothing.
		change.Value += "; unsettled: " + strings.Join(unsettled, ", ")
	}
	t := []target{
		{Goal: "no object over 256 KiB", Value: fmt.Sprintf("largest %s %s: %s", largestKind, largest.Name, kib(largest.Bytes)),
			Met: len(phases) > 0 && largest.Bytes <= maxObjectBytes},
		change,
		{Goal: "0 writes in steady state (Lease renewals aside)", Value: fmt.Sprintf("%d writes", steadyWrites), Met: steadyWrites == 0},
		{Goal: "0 panics", Value: fmt.Sprintf("%.0f", panics), Met: len(phases) > 0 && panics == 0},
		{Goal: "0 empty patches", Value: fmt.Sprintf("%.0f", empty), Met: len(phases) > 0 && empty == 0},
		{Goal: "0 reconcile errors outside the outage", Value: fmt.Sprintf("%.0f", errorsOutside), Met: len(phases) > 0 && errorsOutside == 0},
		{Goal: "operator peak RSS ≤ 256 MiB", Value: mib(peakRSS), Met: peakRSS > 0 && peakRSS <= maxPeakRSS},
	}
	ready := target{Goal: "Ready ≤ 10 s after the last relay pod is ready", Value: "not measured"}
	if readyAfter != nil {
		ready.Value, ready.Met = readyAfter.Round(10*time.Millisecond).String(), *readyAfter <= maxReadyAfterPods
	}
	return append(t, ready)
}

func kib(b int) string   { return fmt.Sprintf("%.1f KiB", float64(b)/1024) }
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// printReport writes the tables: one row per phase, the writes of each
// phase by resource and verb, then the goals.
func printReport(w io.Writer, r report) {
	fmt.Fprintf(w, "\nturnpike operator at scale: %d nodes, %d TurnCredentials\noperator: %s\noptions: %s\n\n",
		r.Nodes, r.Credentials, r.Operator, r.Options)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tduration\twrites\twritten\tempty\t409\tfailed\tlease\treads\trec.err\tpanics\trestarts\tCPU s\tpeak RSS\tTurnServer\tConfigMap\tSecret\tDaemonSet\t")
	for _, p := range r.Phases {
		q := p.Requests
		settled := ""
		if !p.Settled {
			settled = " (unsettled)"
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n",
			p.Name, p.Duration.Round(time.Second), settled, q.WriteTotal, kib(q.BytesTotal), q.Empty, q.Conflicts, q.FailedWrites,
			q.LeaseWrites, q.Reads, p.ReconcileErrors, p.Panics, p.Restarts, p.CPUSeconds, mib(p.PeakRSS),
			kib(p.Largest["TurnServer"].Bytes), kib(p.Largest["ConfigMap"].Bytes), kib(p.Largest["Secret"].Bytes), kib(p.Largest["DaemonSet"].Bytes))
	}
	tw.Flush()
	fmt.Fprintln(w, "\nTurnServer, ConfigMap, Secret, DaemonSet: the largest object of that kind at the phase's end (JSON).")

	fmt.Fprintln(w, "\nwrites by resource and verb:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range r.Phases {
		var parts []string
		for _, k := range p.Requests.writeKeys() {
			c := p.Requests.Writes[k]
			empty := ""
			if c.Empty > 0 {
				empty = fmt.Sprintf(", %d empty", c.Empty)
			}
			parts = append(parts, fmt.Sprintf("%s %d (%s%s)", k, c.Count, kib(c.Bytes), empty))
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(tw, "  %s\t%s\n", p.Name, strings.Join(parts, ", "))
	}
	tw.Flush()

	fmt.Fprintln(w, "\nper phase (per single change: mean = writes ÷ changes; max = the busiest window from one change to the next):")
	for _, p := range r.Phases {
		if c := p.PerChange; c != nil {
			fmt.Fprintf(w, "  %s (%d): mean %.1f writes, %s; max %d writes, %s\n",
				p.Name, p.Changes, c.MeanWrites, kib(int(c.MeanBytes)), c.MaxWrites, kib(c.MaxBytes))
		}
		for _, n := range p.Notes {
			fmt.Fprintf(w, "  %s: %s\n", p.Name, n)
		}
		if p.ReadyAfterLastPod != nil {
			fmt.Fprintf(w, "  %s: TurnServer Ready %s after the last relay pod was ready\n", p.Name, p.ReadyAfterLastPod.Round(10*time.Millisecond))
		}
	}

	fmt.Fprintf(w, "\ngoals (set for 10,000 nodes; measured here at %d):\n", r.Nodes)
	for _, t := range r.Targets {
		met := "met"
		if !t.Met {
			met = "NOT met"
		}
		fmt.Fprintf(w, "  %-8s %s: %s\n", met, t.Goal, t.Value)
	}
}
