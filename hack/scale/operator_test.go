package main

import (
	"testing"
	"time"
)

func TestSumMetric(t *testing.T) {
	text := `# HELP controller_runtime_reconcile_errors_total Total number of reconciliation errors per controller
# TYPE controller_runtime_reconcile_errors_total counter
controller_runtime_reconcile_errors_total{controller="turnserver"} 3
controller_runtime_reconcile_errors_total{controller="turncredential"} 2
controller_runtime_reconcile_errors_total_extra 100
controller_runtime_reconcile_panics_total{controller="turnserver",note="a } in a label"} 1
plain_metric 7.5
`
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"controller_runtime_reconcile_errors_total", 5},
		{"controller_runtime_reconcile_panics_total", 1},
		{"plain_metric", 7.5},
		{"absent_total", 0},
	} {
		if got := sumMetric(text, tc.name); got != tc.want {
			t.Errorf("sumMetric(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCounterOverRestarts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		observed []float64 // -1: the process was seen to restart
		want     float64
	}{
		{name: "one process", observed: []float64{0, 2, 5}, want: 5},
		{name: "a restart seen", observed: []float64{3, 4, -1, 1, 2}, want: 6},
		{name: "a reset seen only in the values", observed: []float64{3, 4, 1}, want: 5},
		{name: "a restart, then the same value again", observed: []float64{4, -1, 4}, want: 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c counter
			for _, v := range tc.observed {
				if v < 0 {
					c.reset()
					continue
				}
				c.observe(v)
			}
			if got := c.total(); got != tc.want {
				t.Errorf("total = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNextRestartDelay(t *testing.T) {
	for _, tc := range []struct {
		last, ran, want time.Duration
	}{
		{last: minRestartDelay, ran: time.Second, want: 2 * minRestartDelay},
		{last: 30 * time.Second, ran: time.Second, want: maxRestartDelay},
		{last: maxRestartDelay, ran: 2 * time.Minute, want: minRestartDelay},
	} {
		if got := nextRestartDelay(tc.last, tc.ran); got != tc.want {
			t.Errorf("nextRestartDelay(%s, ran %s) = %s, want %s", tc.last, tc.ran, got, tc.want)
		}
	}
}
