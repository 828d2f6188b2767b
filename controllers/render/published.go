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
	zone    string // its topology.kubernetes.io/zone label
}

// pickAddresses chooses up to n serving nodes per IP family and returns
// their addresses of that family, IPv4 first. A browser gathers candidates
// from every TURN URL it is given, so the list must stay short however many
// nodes there are.
//
// The choice is rendezvous hashing (see rank): the n best-ranked serving
// nodes of a family win. It depends on nothing but the set of serving
// nodes, so it is the same after an operator restart; it changes only when
// a chosen node stops serving or a new node outranks one (n in every N new
// nodes), so URLs seldom churn; and different seeds (TurnServers, users)
// spread over all nodes.
func pickAddresses(seed string, nodes []RelayNode, n int) []netip.Addr {
	var out []netip.Addr
	for _, family := range pick(seed, "", nodes, n) {
		for _, c := range family {
			out = append(out, c.addr)
		}
	}
	return out
}

// pick is pickAddresses' choice, per family (IPv4, IPv6), best first. With
// a zone, the nodes in it come first: the n best of them per family, and
// the best of the others only to fill a family the zone has too few for.
func pick(seed, zone string, nodes []RelayNode, n int) [2][]candidate {
	var best [2][]candidate
	buf := make([]byte, 0, 128)
	for _, node := range nodes {
		if !node.serving || len(node.addresses) == 0 {
			continue
		}
		var r uint64
		r, buf = rank(buf, seed, node.name)
		near := zone != "" && node.zone == zone
		for _, a := range node.addresses {
			f := family(a)
			best[f] = keepBest(best[f], candidate{near, r, node.name, a}, n)
		}
	}
	return best
}

// rank is a node's place in seed's order, higher first: the first 8 bytes
// of SHA-256(seed, 0, name), the same in every process and release. buf is
// scratch space, returned for reuse.
func rank(buf []byte, seed, name string) (uint64, []byte) {
	buf = append(append(append(buf[:0], seed...), 0), name...)
	sum := sha256.Sum256(buf)
	return binary.BigEndian.Uint64(sum[:8]), buf
}

// family indexes per-family arrays: 0 for IPv4, 1 for IPv6.
func family(a netip.Addr) int {
	if a.Is6() {
		return 1
	}
	return 0
}

// candidate is one node's address and its rank for a seed.
type candidate struct {
	near bool // in the client's zone
	rank uint64
	name string
	addr netip.Addr
}

// better orders candidates: in the client's zone first, then higher rank,
// then by name.
func (c candidate) better(o candidate) bool {
	if c.near != o.near {
		return c.near
	}
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
// STUN), it falls back to status.urls. The URLChoice says which later
// changes can change the URIs.
func URIsFor(ts *turnpikev1.TurnServer, nodes []RelayNode, seed string) ([]string, URLChoice) {
	return chooseURIs(ts, nodes, seed, "", nil)
}

// URIsNear is URIsFor for one request of the issuing endpoint: the
// serving nodes in the client's topology zone first, so its relayed media
// stays in the zone (no cross-zone transfer charges, shorter paths), and
// nodes of other zones only where the zone has fewer than
// spec.urlNodesPerFamily of a family; and, with loads (allocations by node
// name, as the relays report them), the least loaded of twice as many
// candidates (see leastLoaded). An empty or unknown zone and nil loads are
// URIsFor's choice.
func URIsNear(ts *turnpikev1.TurnServer, nodes []RelayNode, seed, zone string, loads map[string]int) []string {
	uris, _ := chooseURIs(ts, nodes, seed, zone, loads)
	return uris
}

// chooseURIs is URIsFor and URIsNear. The URLChoice is only right for no
// zone and no loads.
func chooseURIs(ts *turnpikev1.TurnServer, nodes []RelayNode, seed, zone string, loads map[string]int) ([]string, URLChoice) {
	if ts.Spec.Hostname == "" {
		n := urlNodesPerFamily(ts)
		var best [2][]candidate
		if loads == nil {
			best = pick(seed, zone, nodes, n)
		} else {
			best = leastLoaded(pick(seed, zone, nodes, 2*n), loads, n)
		}
		if len(best[0])+len(best[1]) > 0 {
			choice := URLChoice{nodes: true, seed: seed}
			var picked []netip.Addr
			for f, family := range best {
				for _, c := range family {
					picked = append(picked, c.addr)
					choice.chosen = append(choice.chosen, c.name)
				}
				if len(family) == n {
					choice.full[f], choice.floor[f] = true, family[n-1].rank
				}
			}
			uris := turnURLs(ts, urlHosts(picked))
			slices.Sort(uris)
			return uris, choice
		}
	}
	// With no node chosen, a node that starts serving can change them too.
	return append([]string{}, ts.Status.URLs...), URLChoice{FromStatus: true, nodes: ts.Spec.Hostname == ""}
}

// leastLoaded keeps, of each family's candidates (best first), the n whose
// relays report the fewest allocations: "two choices" over the user's 2n
// best-ranked nodes, so a busy node is passed over for the next in the
// user's order, load evens out across nodes, and a user still lands on a
// small set of nodes. Equal loads keep the rank order; the client's zone
// still comes first. A node that reported nothing counts as idle.
func leastLoaded(best [2][]candidate, loads map[string]int, n int) [2][]candidate {
	for f := range best {
		slices.SortStableFunc(best[f], func(a, b candidate) int {
			if a.near != b.near {
				if a.near {
					return -1
				}
				return 1
			}
			return cmp.Compare(loads[a.name], loads[b.name])
		})
		best[f] = best[f][:min(n, len(best[f]))]
	}
	return best
}

// URLChoice is what a client's URIs were chosen from: enough to tell
// whether a change can change them without choosing again, so that one
// node's change wakes only the credentials that name it or that it would
// now enter. The zero URLChoice depends on nothing.
type URLChoice struct {
	// FromStatus: the URIs are the TurnServer's status.urls (spec.hostname,
	// or no node address known), and change with them.
	FromStatus bool
	// nodes: a node's change can change the URIs.
	nodes  bool
	seed   string
	chosen []string  // names of the chosen nodes, any family
	full   [2]bool   // per family: spec.urlNodesPerFamily nodes chosen
	floor  [2]uint64 // per family: the lowest rank chosen, when full
}

// NodeMatters reports whether a change of node name, whose published
// addresses are addrs (before and after the change), can change the URIs:
// it is one of the chosen nodes, or it has an address of a family that has
// room or where it ranks at least as high as a chosen node. Anything else
// about that node (it starts or stops serving, its address changes) leaves
// the choice as it is.
func (c URLChoice) NodeMatters(name string, addrs []netip.Addr) bool {
	if !c.nodes {
		return false
	}
	if slices.Contains(c.chosen, name) {
		return true
	}
	r, _ := rank(nil, c.seed, name)
	for _, a := range addrs {
		if f := family(a); !c.full[f] || r >= c.floor[f] {
			return true
		}
	}
	return false
}
