package render

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

func TestFastPathStatus(t *testing.T) {
	var nodes []*corev1.Node
	for i := range 12 {
		n := rendertest.Node(fmt.Sprintf("n%02d", i), nil, nil)
		nodes = append(nodes, &n)
	}
	kernel := FastPathReport{Mode: "Auto", Active: true}
	noAgent := FastPathReport{Mode: "Auto", Reason: "connecting to the fast-path agent"}
	reports := func(of map[int]FastPathReport) map[string]FastPathReport {
		out := map[string]FastPathReport{}
		for i, r := range of {
			out[nodes[i].Name] = r
		}
		return out
	}
	allKernel, allUserspace := map[int]FastPathReport{}, map[int]FastPathReport{}
	for i := range nodes {
		allKernel[i], allUserspace[i] = kernel, noAgent
	}
	disabled := func(ts *turnpikev1.TurnServer) { ts.Spec.Relay.FastPath.Mode = turnpikev1.FastPathDisabled }
	enabled := func(ts *turnpikev1.TurnServer) { ts.Spec.Relay.FastPath.Mode = turnpikev1.FastPathEnabled }
	tests := []struct {
		name              string
		mode              []func(*turnpikev1.TurnServer)
		reports           map[int]FastPathReport
		kernel, userspace int32
		cond              string   // "Status/Reason", "" for no condition
		named, notNamed   []string // in the message
	}{
		{"disabled: no condition even with reports", []func(*turnpikev1.TurnServer){disabled}, allUserspace, 0, 0, "", nil, nil},
		{"nothing read yet", nil, nil, 0, 0, "Unknown/NotReported", nil, nil},
		{"all in the kernel", nil, allKernel, 12, 0, "True/KernelActive", []string{"12 relays"}, nil},
		{"one relay without its agent", nil, map[int]FastPathReport{0: kernel, 1: kernel, 7: noAgent}, 2, 1, "False/AgentUnavailable",
			[]string{"1 of 3 relays", "n07 (connecting to the fast-path agent)"}, []string{"n00", "n01", "and more"}},
		{"all in userspace: names a few", nil, allUserspace, 0, 12, "False/AgentUnavailable",
			[]string{"12 of 12", "n00", "n04", "and more"}, []string{"n05", "n11"}},
		{"a long reason is cut", nil, map[int]FastPathReport{3: {Mode: "Auto", Reason: strings.Repeat("é", 200)}}, 0, 1, "False/AgentUnavailable",
			[]string{"n03 (" + strings.Repeat("é", maxReasonInMessage/2) + "…)"}, nil},
		{"Enabled counts as on", []func(*turnpikev1.TurnServer){enabled}, map[int]FastPathReport{2: kernel}, 1, 0, "True/KernelActive", nil, nil},
		{"a relay off the selection does not count", nil, map[int]FastPathReport{0: kernel}, 1, 0, "True/KernelActive", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := rendertest.TurnServer("ts", tt.mode...)
			ts.Generation = 4
			obs := &Observation{Nodes: nodes, FastPath: reports(tt.reports)}
			if tt.name == "a relay off the selection does not count" {
				obs.FastPath["gone"] = noAgent
			}
			sum, cond := FastPathStatus(ts, obs)
			if tt.cond == "" {
				if sum != nil || cond != nil {
					t.Fatalf("summary %+v, condition %+v; want neither", sum, cond)
				}
				return
			}
			if sum == nil || sum.KernelRelays != tt.kernel || sum.UserspaceRelays != tt.userspace {
				t.Errorf("summary %+v, want %d kernel, %d userspace", sum, tt.kernel, tt.userspace)
			}
			if cond == nil || fmt.Sprintf("%s/%s", cond.Status, cond.Reason) != tt.cond || cond.Type != turnpikev1.ConditionFastPath || cond.ObservedGeneration != 4 {
				t.Fatalf("condition %+v, want %s at generation 4", cond, tt.cond)
			}
			for _, s := range tt.named {
				if !strings.Contains(cond.Message, s) {
					t.Errorf("message %q does not say %q", cond.Message, s)
				}
			}
			for _, s := range tt.notNamed {
				if strings.Contains(cond.Message, s) {
					t.Errorf("message %q says %q", cond.Message, s)
				}
			}
		})
	}
}

// TestComputeStatusFastPathCondition: the condition goes with the mode
// (removed when the fast path is turned off) and keeps its transition time
// while it does not change.
func TestComputeStatusFastPathCondition(t *testing.T) {
	n := rendertest.Node("n1", nil, nil)
	obs := &Observation{Nodes: []*corev1.Node{&n}, FastPath: map[string]FastPathReport{"n1": {Mode: "Auto", Active: true}}}
	ts := rendertest.TurnServer("ts")
	st := ComputeStatus(ts, obs, nil)
	c := meta.FindStatusCondition(st.Conditions, turnpikev1.ConditionFastPath)
	if c == nil || c.Status != metav1.ConditionTrue || st.FastPath == nil || st.FastPath.KernelRelays != 1 {
		t.Fatalf("condition %+v, summary %+v", c, st.FastPath)
	}
	c.LastTransitionTime = metav1.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ts.Status = st
	again := ComputeStatus(ts, obs, nil)
	if c2 := meta.FindStatusCondition(again.Conditions, turnpikev1.ConditionFastPath); !c2.LastTransitionTime.Equal(&c.LastTransitionTime) {
		t.Errorf("transition time %v, want the unchanged %v", c2.LastTransitionTime, c.LastTransitionTime)
	}
	ts.Spec.Relay.FastPath.Mode = turnpikev1.FastPathDisabled
	off := ComputeStatus(ts, obs, nil)
	if c := meta.FindStatusCondition(off.Conditions, turnpikev1.ConditionFastPath); c != nil || off.FastPath != nil {
		t.Errorf("with the fast path Disabled: condition %+v, summary %+v", c, off.FastPath)
	}
}
