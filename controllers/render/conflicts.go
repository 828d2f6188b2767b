package render

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// portClaim is a range of host ports a relay binds on one transport.
type portClaim struct {
	transport string // "udp" or "tcp"
	min, max  int32
	what      string // for messages: "listener udp", "relay port range"
}

func (c portClaim) overlaps(o portClaim) bool {
	return c.transport == o.transport && c.min <= o.max && o.min <= c.max
}

// portClaims lists every host port a TurnServer's relays bind: listeners,
// the behaviour discovery alternate port, the internal metrics and health
// ports, and the relay port range (UDP, and TCP too when TCP relaying is on).
func portClaims(ts *turnpikev1.TurnServer) []portClaim {
	var claims []portClaim
	for _, l := range ts.Spec.Listeners {
		t := config.Protocol(l.Protocol).Transport()
		claims = append(claims, portClaim{t, l.Port, l.Port, "listener " + l.Name})
	}
	if bd := ts.Spec.BehaviorDiscovery; bd != nil {
		claims = append(claims, portClaim{"udp", bd.AlternatePort, bd.AlternatePort, "behaviour discovery alternate port"})
	}
	claims = append(claims,
		portClaim{"tcp", ts.Spec.MetricsPort, ts.Spec.MetricsPort, "metrics port"},
		portClaim{"tcp", ts.Spec.HealthPort, ts.Spec.HealthPort, "health port"})
	r := ts.Spec.RelayPortRange
	claims = append(claims, portClaim{"udp", r.Min, r.Max, "relay port range"})
	if ts.Spec.TCPRelay {
		claims = append(claims, portClaim{"tcp", r.Min, r.Max, "relay port range"})
	}
	return claims
}

// portConflict is an older TurnServer that wins a host port over this one.
type portConflict struct {
	other *turnpikev1.TurnServer
	node  string
	ours  portClaim
	their portClaim
}

func (c *portConflict) message() string {
	return fmt.Sprintf("%s (%s %d-%d) collides on node %s with the %s of older TurnServer %s/%s; change ports or placement",
		c.ours.what, c.ours.transport, c.ours.min, c.ours.max, c.node, c.their.what, c.other.Namespace, c.other.Name)
}

// FindPortConflict returns the conflict that keeps ts from rolling out, or
// nil. TurnServers claim ports in order of age, so existing relays never lose
// their ports to a newcomer; one that lost claims nothing, so it does not
// block a third.
func FindPortConflict(ts *turnpikev1.TurnServer, all []turnpikev1.TurnServer, nodes []*corev1.Node) *portConflict {
	var byAge []*turnpikev1.TurnServer
	for i := range all {
		if all[i].UID != ts.UID && all[i].DeletionTimestamp.IsZero() && createdBefore(&all[i], ts) {
			byAge = append(byAge, &all[i])
		}
	}
	sort.Slice(byAge, func(i, j int) bool { return createdBefore(byAge[i], byAge[j]) })

	var winners []*turnpikev1.TurnServer
	for _, older := range byAge {
		if conflictWith(older, winners, nodes) == nil {
			winners = append(winners, older)
		}
	}
	return conflictWith(ts, winners, nodes)
}

// conflictWith returns the first of winners that shares a node and a port with ts.
func conflictWith(ts *turnpikev1.TurnServer, winners []*turnpikev1.TurnServer, nodes []*corev1.Node) *portConflict {
	ours := portClaims(ts)
	for _, other := range winners {
		node := sharedNode(ts, other, nodes)
		if node == "" {
			continue
		}
		for _, a := range ours {
			for _, b := range portClaims(other) {
				if a.overlaps(b) {
					return &portConflict{other: other, node: node, ours: a, their: b}
				}
			}
		}
	}
	return nil
}

// createdBefore orders TurnServers by age, then by namespace/name so two
// created in the same second still have a stable winner.
func createdBefore(a, b *turnpikev1.TurnServer) bool {
	ta, tb := a.CreationTimestamp, b.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// sharedNode returns a node both TurnServers place relays on, or "".
func sharedNode(a, b *turnpikev1.TurnServer, nodes []*corev1.Node) string {
	selectsA, selectsB := nodeSelection(a), nodeSelection(b)
	for _, n := range nodes {
		if selectsA(n) && selectsB(n) {
			return n.Name
		}
	}
	return ""
}
