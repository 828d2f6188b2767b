package render

import (
	"fmt"
	"strings"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// Reasons of the FastPath condition.
const (
	ReasonKernelActive     = "KernelActive"
	ReasonAgentUnavailable = "AgentUnavailable"
	ReasonNotReported      = "NotReported"
)

// FastPathReport is what one relay's /status said of its fast path.
type FastPathReport struct {
	Mode   string
	Active bool
	// Reason is why it is not active, in the relay's words.
	Reason string
}

// maxReasonInMessage bounds each relay's reason quoted in the FastPath
// condition, so the message stays short however the relay words it.
const maxReasonInMessage = 120

// FastPathStatus counts the ready relays by where they relay and says so in
// the FastPath condition; with the fast path Disabled it returns neither.
// Only relays whose /status reported a fast path count: one not read yet,
// or of a release before the agent, is in neither count. The condition
// names the first relays in userspace (by node name) with their reasons;
// the counts carry the rest, so the status stays the same size at any
// number of nodes.
func FastPathStatus(ts *turnpikev1.TurnServer, obs *Observation) (*turnpikev1.FastPathSummary, *metav1.Condition) {
	if ts.Spec.Relay.FastPath.EffectiveMode() == turnpikev1.FastPathDisabled {
		return nil, nil
	}
	sum := &turnpikev1.FastPathSummary{}
	var userspace []string
	for _, n := range obs.Nodes {
		r, ok := obs.FastPath[n.Name]
		switch {
		case !ok:
		case r.Active:
			sum.KernelRelays++
		default:
			sum.UserspaceRelays++
			if len(userspace) < maxNamedInMessage {
				userspace = append(userspace, n.Name+" ("+shorten(r.Reason, maxReasonInMessage)+")")
			}
		}
	}
	cond := &metav1.Condition{Type: turnpikev1.ConditionFastPath, ObservedGeneration: ts.Generation}
	reported := sum.KernelRelays + sum.UserspaceRelays
	switch {
	case reported == 0:
		cond.Status, cond.Reason = metav1.ConditionUnknown, ReasonNotReported
		cond.Message = "no relay has reported its fast path yet"
	case sum.UserspaceRelays > 0:
		more := ""
		if sum.UserspaceRelays > int32(len(userspace)) {
			more = " and more"
		}
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonAgentUnavailable
		cond.Message = fmt.Sprintf("%d of %d relays relay in userspace, the fast-path agent missing or failed: %s%s",
			sum.UserspaceRelays, reported, strings.Join(userspace, ", "), more)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonKernelActive
		cond.Message = fmt.Sprintf("%d relays relay bound channels in the kernel", reported)
	}
	return sum, cond
}

// shorten cuts s to at most n bytes, on a rune boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
