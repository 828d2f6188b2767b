package render

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// DefaultURLNodesPerFamily is how many nodes per IP family a TurnServer's
// URLs name when spec.urlNodesPerFamily is unset.
const DefaultURLNodesPerFamily = 4

// RelayNode is one selected node as clients can reach it.
type RelayNode struct {
	name      string
	addresses []netip.Addr // published addresses, at most one per family
	// serving: its relay pod is ready and the node is not being drained
	// (cordoned, or its relay pod terminating).
	serving bool
}

// pickAddresses chooses up to n serving nodes per IP family and returns
// their addresses of that family, IPv4 first. A browser gathers candidates
// from every TURN URL it is given, so the list must stay short however many
// nodes there are.
//
// The choice is rendezvous hashing: every node's rank is the first 8 bytes
// of SHA-256(seed, 0, name), the same in every process and release, and the
// n best of a family win. It depends on nothing
// but the set of serving nodes, so it is the same after an operator restart;
// it changes only when a chosen node stops serving or a new node outranks
// one (n in every N new nodes), so URLs seldom churn; and different seeds
// (TurnServers, users) spread over all nodes.
func pickAddresses(seed string, nodes []RelayNode, n int) []netip.Addr {
	var best [2][]candidate // per family: IPv4, IPv6
	buf := make([]byte, 0, 128)
	for _, node := range nodes {
		if !node.serving || len(node.addresses) == 0 {
			continue
		}
		buf = append(append(append(buf[:0], seed...), 0), node.name...)
		sum := sha256.Sum256(buf)
		rank := binary.BigEndian.Uint64(sum[:8])
		for _, a := range node.addresses {
			family := 0
			if a.Is6() {
				family = 1
			}
			best[family] = keepBest(best[family], candidate{rank, node.name, a}, n)
		}
	}
	var out []netip.Addr
	for _, family := range best {
		for _, c := range family {
			out = append(out, c.addr)
		}
	}
	return out
}

// candidate is one node's address and its rank for a seed.
type candidate struct {
	rank uint64
	name string
	addr netip.Addr
}

// better orders candidates: higher rank first, then by name.
func (c candidate) better(o candidate) bool {
	return cmp.Or(cmp.Compare(o.rank, c.rank), cmp.Compare(c.name, o.name)) < 0
}

// keepBest inserts c into best, sorted best first, keeping at most n: a
// partial sort, as n is a handful and the nodes are thousands.
func keepBest(best []candidate, c candidate, n int) []candidate {
	i := len(best)
	for i > 0 && c.better(best[i-1]) {
		i--
	}
	if i >= n {
		return best
	}
	best = slices.Insert(best, i, c)
	return best[:min(len(best), n)]
}

// URIsFor is the URIs one client is given: spec.hostname's when it is set;
// else those of spec.urlNodesPerFamily serving nodes per family chosen by
// rendezvous hashing of seed (the user) over all of them, so clients spread
// over every node while one user keeps landing on the same ones. When no
// node's address is known to the operator (relays discovering theirs with
// STUN), it falls back to status.urls.
func URIsFor(ts *turnpikev1.TurnServer, nodes []RelayNode, seed string) []string {
	if ts.Spec.Hostname == "" {
		if picked := pickAddresses(seed, nodes, urlNodesPerFamily(ts)); len(picked) > 0 {
			uris := turnURLs(ts, urlHosts(picked))
			slices.Sort(uris)
			return uris
		}
	}
	return append([]string{}, ts.Status.URLs...)
}
