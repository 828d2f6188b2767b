package render

import (
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// daemonPodTolerations are the tolerations the DaemonSet controller adds to
// every daemon pod (hostNetwork ones included), so a node under memory
// pressure or cordoned still runs its relay.
var daemonPodTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeNetworkUnavailable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// SelectsNode reports whether the relay DaemonSet of ts would run on node,
// by the DaemonSet controller's rules: node selector, required node affinity,
// and NoSchedule/NoExecute taints that neither the placement nor the
// DaemonSet controller's own tolerations tolerate. A new node is tainted
// not-ready (NoSchedule) until its kubelet reports ready, so it is not
// selected before then.
func SelectsNode(ts *turnpikev1.TurnServer, node *corev1.Node) bool {
	return nodeSelection(ts)(node)
}

// nodeSelection is SelectsNode for one TurnServer, with its placement
// parsed once: parsing it for each of thousands of nodes was a large part
// of what a pass allocated.
func nodeSelection(ts *turnpikev1.TurnServer) func(*corev1.Node) bool {
	p := ts.Spec.Placement
	affinity := nodeaffinity.NewRequiredNodeAffinity(p.NodeSelector, p.Affinity)
	blocking := func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}
	tolerations := append(slices.Clip(p.Tolerations), daemonPodTolerations...)
	return func(node *corev1.Node) bool {
		// An affinity the scheduler cannot parse matches no node, as for the scheduler.
		if ok, err := affinity.Match(node); !ok || err != nil {
			return false
		}
		_, untolerated := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), node.Spec.Taints, tolerations, blocking, false)
		return !untolerated
	}
}

// SelectedNodes returns the nodes ts places relays on, sorted by name.
func SelectedNodes(ts *turnpikev1.TurnServer, nodes []*corev1.Node) []*corev1.Node {
	selects := nodeSelection(ts)
	var out []*corev1.Node
	for _, n := range nodes {
		if selects(n) {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// NodeAddresses is where one node's relay can be reached.
type NodeAddresses struct {
	Addresses []netip.Addr // at most one per IP family, IPv4 first
	Source    turnpikev1.AddressSource
	Public    bool
}

// ResolveNodeAddresses picks a node's public addresses by the first source
// that has any: the TurnServer's spec, the node's turnpike.dev/external-ip
// annotation, the node's ExternalIP addresses; then, when spec.stun is set,
// the relay's own STUN discovery (the operator learns no address); and last
// the node's InternalIP addresses, which are flagged as not public.
func ResolveNodeAddresses(ts *turnpikev1.TurnServer, node *corev1.Node) NodeAddresses {
	for _, e := range ts.Spec.ExternalAddresses {
		if e.NodeName == node.Name {
			var raw []string
			for _, a := range e.Addresses {
				raw = append(raw, string(a))
			}
			if addrs := OnePerFamily(raw); len(addrs) > 0 {
				return NodeAddresses{addrs, turnpikev1.AddressFromSpec, true}
			}
		}
	}
	if v := node.Annotations[turnpikev1.AnnotationExternalIP]; v != "" {
		if addrs := OnePerFamily(strings.Split(v, ",")); len(addrs) > 0 {
			return NodeAddresses{addrs, turnpikev1.AddressFromAnnotation, true}
		}
	}
	if addrs := OnePerFamily(nodeAddressesOfType(node, corev1.NodeExternalIP)); len(addrs) > 0 {
		return NodeAddresses{addrs, turnpikev1.AddressFromExternalIP, true}
	}
	if ts.Spec.STUN != nil {
		return NodeAddresses{nil, turnpikev1.AddressFromSTUN, false}
	}
	return NodeAddresses{OnePerFamily(nodeAddressesOfType(node, corev1.NodeInternalIP)), turnpikev1.AddressFromInternalIP, false}
}

func nodeAddressesOfType(node *corev1.Node, t corev1.NodeAddressType) []string {
	var out []string
	for _, a := range node.Status.Addresses {
		if a.Type == t {
			out = append(out, a.Address)
		}
	}
	return out
}

// OnePerFamily parses addresses and keeps the first valid IPv4 and the first
// valid IPv6 one, IPv4 first. Invalid entries are skipped: a typo in one
// annotation must not take a node out of service.
func OnePerFamily(raw []string) []netip.Addr {
	var v4, v6 netip.Addr
	for _, s := range raw {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			continue
		}
		a = a.Unmap()
		switch {
		case a.Is4() && !v4.IsValid():
			v4 = a
		case a.Is6() && !v6.IsValid():
			v6 = a
		}
	}
	var out []netip.Addr
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}
