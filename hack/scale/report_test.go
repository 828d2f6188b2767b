package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	second := time.Second
	twelve := 12 * time.Second
	good := func() []phaseResult {
		return []phaseResult{
			{Name: "rollout", Settled: true, ReadyAfterLastPod: &second, Largest: map[string]objectSize{"TurnServer": {Name: "ts", Bytes: 10 << 10}}},
			{Name: "steady", Settled: true},
			{Name: "address changes", Settled: true, PerChange: &changeSummary{MeanWrites: 3, MeanBytes: 2 << 10, MaxWrites: 4, MaxBytes: 3 << 10}},
			{Name: "node deletions", Settled: true, PerChange: &changeSummary{MeanWrites: 4, MeanBytes: 3 << 10, MaxWrites: 5, MaxBytes: 4 << 10}},
			{Name: "api outage", Settled: true, ReconcileErrors: 40},
		}
	}
	for _, tc := range []struct {
		name    string
		change  func([]phaseResult)
		keep    int // phases that ran, when not all
		peakRSS int64
		unmet   []string // goals not met, by a word of theirs
	}{
		{name: "all met", peakRSS: 100 << 20},
		{name: "a large object", change: func(p []phaseResult) { p[0].Largest["Secret"] = objectSize{Name: "s", Bytes: 300 << 10} },
			peakRSS: 100 << 20, unmet: []string{"256 KiB"}},
		{name: "node deletions cost too much", change: func(p []phaseResult) { p[3].PerChange.MaxWrites = 6 },
			peakRSS: 100 << 20, unmet: []string{"node change"}},
		{name: "a byte-heavy address change", change: func(p []phaseResult) { p[2].PerChange.MaxBytes = 65 << 10 },
			peakRSS: 100 << 20, unmet: []string{"node change"}},
		{name: "node deletions that never settled", change: func(p []phaseResult) { p[3].PerChange.MaxWrites = 0; p[3].Settled = false },
			peakRSS: 100 << 20, unmet: []string{"node change"}},
		{name: "a small mean, but one change rewrote every credential", change: func(p []phaseResult) { p[2].PerChange.MaxWrites = 64 },
			peakRSS: 100 << 20, unmet: []string{"node change"}},
		{name: "steady writes", change: func(p []phaseResult) { p[1].Requests.WriteTotal = 1 },
			peakRSS: 100 << 20, unmet: []string{"steady"}},
		{name: "errors outside the outage", change: func(p []phaseResult) { p[2].ReconcileErrors = 1 },
			peakRSS: 100 << 20, unmet: []string{"reconcile errors"}},
		{name: "an empty patch and a panic", change: func(p []phaseResult) { p[4].Requests.Empty = 1; p[4].Panics = 1 },
			peakRSS: 100 << 20, unmet: []string{"panics", "empty"}},
		{name: "slow Ready and much memory", change: func(p []phaseResult) { p[0].ReadyAfterLastPod = &twelve },
			peakRSS: 300 << 20, unmet: []string{"RSS", "Ready"}},
		{name: "phases that did not run are not met", keep: 1, peakRSS: 100 << 20, unmet: []string{"node change", "steady"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phases := good()
			if tc.change != nil {
				tc.change(phases)
			}
			if tc.keep > 0 {
				phases = phases[:tc.keep]
			}
			var unmet []string
			for _, g := range evaluate(phases, tc.peakRSS) {
				if !g.Met {
					unmet = append(unmet, g.Goal)
				}
			}
			if len(unmet) != len(tc.unmet) {
				t.Fatalf("unmet goals %q, want ones about %q", unmet, tc.unmet)
			}
			for i, word := range tc.unmet {
				if !strings.Contains(unmet[i], word) {
					t.Errorf("unmet goal %q, want one about %q", unmet[i], word)
				}
			}
		})
	}
}

// TestPrintReport checks that the table names every phase and every goal.
func TestPrintReport(t *testing.T) {
	second := time.Second
	r := report{Nodes: 10, Credentials: 2, Phases: []phaseResult{
		{Name: "rollout", ReadyAfterLastPod: &second, Requests: requestCounts{Writes: map[string]writeCount{"secrets patch": {Count: 2, Bytes: 2048}}, WriteTotal: 2}},
		{Name: "address changes", PerChange: &changeSummary{MeanWrites: 1}, Changes: 3},
	}}
	r.Targets = evaluate(r.Phases, 1<<20)
	var out bytes.Buffer
	printReport(&out, r)
	for _, want := range []string{"rollout", "address changes (3)", "secrets patch 2 (2.0 KiB)", "NOT met", "Ready ≤ 10 s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
