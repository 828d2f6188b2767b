package controllers

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// DefaultURLNodesPerFamily is how many nodes per IP family a TurnServer's
// URLs name when spec.urlNodesPerFamily is unset.
const DefaultURLNodesPerFamily = 4

// relayNode is one selected node as clients can reach it.
type relayNode struct {
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
// The choice is rendezvous hashing: every node gets a rank from a hash of
// seed and its name, and the n best of a family win. It depends on nothing
// but the set of serving nodes, so it is the same after an operator restart;
// it changes only when a chosen node stops serving or a new node outranks
// one (n in every N new nodes), so URLs seldom churn; and different seeds
// (TurnServers, users) spread over all nodes.
func pickAddresses(seed string, nodes []relayNode, n int) []netip.Addr {
	var out []netip.Addr
	for _, family := range []func(netip.Addr) bool{netip.Addr.Is4, netip.Addr.Is6} {
		type candidate struct {
			rank uint64
			name string
			addr netip.Addr
		}
		var cs []candidate
		for _, node := range nodes {
			if !node.serving {
				continue
			}
			for _, a := range node.addresses {
				if family(a) {
					cs = append(cs, candidate{rendezvousRank(seed, node.name), node.name, a})
				}
			}
		}
		slices.SortFunc(cs, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(b.rank, a.rank), cmp.Compare(a.name, b.name))
		})
		for _, c := range cs[:min(n, len(cs))] {
			out = append(out, c.addr)
		}
	}
	return out
}

// rendezvousRank is node's rank for seed: the first 8 bytes of
// SHA-256(seed, 0, node), stable across processes and releases.
func rendezvousRank(seed, node string) uint64 {
	h := sha256.New()
	h.Write([]byte(seed))
	h.Write([]byte{0})
	h.Write([]byte(node))
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// observeRelayNodes lists the nodes ts places relays on, with the addresses
// the operator resolves for them and whether they serve. Addresses that only
// the relays know (STUN) are missing.
func observeRelayNodes(ctx context.Context, c client.Reader, ts *turnpikev1.TurnServer) ([]relayNode, error) {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return nil, err
	}
	pods, err := relayPods(ctx, c, ts)
	if err != nil {
		return nil, err
	}
	obs := &observation{nodes: selectedNodes(ts, nodes.Items), addresses: map[string]nodeAddresses{}, readyPods: readyNodes(pods)}
	for _, n := range obs.nodes {
		obs.addresses[n.Name] = resolveNodeAddresses(ts, n)
	}
	return relayNodes(obs, false), nil
}

// urisFor is the URIs one client is given: spec.hostname's when it is set;
// else those of spec.urlNodesPerFamily serving nodes per family chosen by
// rendezvous hashing of seed (the user) over all of them, so clients spread
// over every node while one user keeps landing on the same ones. When no
// node's address is known to the operator (relays discovering theirs with
// STUN), it falls back to status.urls.
func urisFor(ts *turnpikev1.TurnServer, nodes []relayNode, seed string) []string {
	if ts.Spec.Hostname == "" {
		if picked := pickAddresses(seed, nodes, urlNodesPerFamily(ts)); len(picked) > 0 {
			uris := turnURLs(ts, urlHosts(picked))
			slices.Sort(uris)
			return uris
		}
	}
	return append([]string{}, ts.Status.URLs...)
}
