package render

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

func TestPickAddresses(t *testing.T) {
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }
	v6 := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i)) }
	cluster := func(count int) []RelayNode {
		var nodes []RelayNode
		for i := range count {
			nodes = append(nodes, RelayNode{name: fmt.Sprintf("node-%03d", i), addresses: []netip.Addr{v4(i)}, serving: true})
		}
		return nodes
	}
	t.Run("few nodes: every serving one, per family", func(t *testing.T) {
		nodes := []RelayNode{
			{name: "a", addresses: []netip.Addr{v4(1), v6(1)}, serving: true},
			{name: "b", addresses: []netip.Addr{v6(2)}, serving: true},
			{name: "c", addresses: []netip.Addr{v4(3)}, serving: false},
			{name: "d", serving: true}, // no address known yet (STUN)
		}
		got := pickAddresses("ns/ts", nodes, 4)
		v6s := got[1:]
		slices.SortFunc(v6s, netip.Addr.Compare)
		if want := []netip.Addr{v4(1), v6(1), v6(2)}; !slices.Equal(got, want) {
			t.Fatalf("picked %v, want %v", got, want)
		}
	})
	t.Run("n per family of many", func(t *testing.T) {
		if got := pickAddresses("ns/ts", cluster(200), 4); len(got) != 4 {
			t.Fatalf("picked %d addresses of 200 nodes, want 4", len(got))
		}
	})
	t.Run("stable: order of nodes and a node joining elsewhere change nothing", func(t *testing.T) {
		nodes := cluster(100)
		first := pickAddresses("ns/ts", nodes, 4)
		reversed := slices.Clone(nodes)
		slices.Reverse(reversed)
		if got := pickAddresses("ns/ts", reversed, 4); !slices.Equal(got, first) {
			t.Fatalf("node order changed the pick: %v, then %v", first, got)
		}
		// Of 50 new nodes, only one that outranks a chosen node may displace it.
		grown := append(slices.Clone(nodes), cluster(150)[100:]...)
		kept := 0
		for _, a := range pickAddresses("ns/ts", grown, 4) {
			if slices.Contains(first, a) {
				kept++
			}
		}
		if kept < 2 {
			t.Fatalf("50 new nodes replaced %d of 4 chosen ones", 4-kept)
		}
	})
	t.Run("a chosen node that stops serving is replaced, the others stay", func(t *testing.T) {
		nodes := cluster(100)
		first := pickAddresses("ns/ts", nodes, 4)
		for i := range nodes {
			if nodes[i].addresses[0] == first[0] {
				nodes[i].serving = false
			}
		}
		got := pickAddresses("ns/ts", nodes, 4)
		if slices.Contains(got, first[0]) || !slices.Equal(got[:3], first[1:]) {
			t.Fatalf("after %v stopped: %v, before %v", first[0], got, first)
		}
	})
	t.Run("seeds spread over the nodes", func(t *testing.T) {
		nodes := cluster(100)
		seen := map[netip.Addr]bool{}
		for u := range 100 {
			for _, a := range pickAddresses(fmt.Sprintf("user-%d", u), nodes, 1) {
				seen[a] = true
			}
		}
		// 100 users over 100 nodes reach ~63 distinct ones; all on a few means no spreading.
		if len(seen) < 40 {
			t.Fatalf("100 users were sent to only %d of 100 nodes", len(seen))
		}
	})
}

// TestURLChoice checks, for 100 credentials of one TurnServer on 200 nodes,
// that every single-node change changes the URIs of only the credentials
// whose choice said the change matters (no credential is left with stale
// URIs), and that the choice says so for only a few of them (the point: one
// node's change wakes and rewrites O(1) credentials, not all).
func TestURLChoice(t *testing.T) {
	ts := rendertest.TurnServer("relay", func(ts *turnpikev1.TurnServer) { ts.Spec.URLNodesPerFamily = 4 })
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}) }
	cluster := func(count int) []RelayNode {
		var nodes []RelayNode
		for i := range count {
			nodes = append(nodes, RelayNode{name: fmt.Sprintf("node-%03d", i), addresses: []netip.Addr{v4(i)}, serving: true})
		}
		return nodes
	}
	const credentials = 100
	seed := func(c int) string { return fmt.Sprintf("TurnCredential ns/app-%d", c) }
	same := func(nodes []RelayNode, i int) []RelayNode { return nodes }
	notServing := func(nodes []RelayNode, i int) []RelayNode { nodes[i].serving = false; return nodes }
	changes := []struct {
		name          string
		before, after func(nodes []RelayNode, i int) []RelayNode
	}{
		{"stops serving", same, notServing},
		{"starts serving", notServing, same},
		{"new address", same, func(nodes []RelayNode, i int) []RelayNode {
			nodes[i].addresses = []netip.Addr{v4(1000 + i)}
			return nodes
		}},
		{"deleted", same, func(nodes []RelayNode, i int) []RelayNode { return slices.Delete(nodes, i, i+1) }},
	}
	// Expected: credentials x 4 / 200 = 2 credentials name a given node,
	// and about as many would take it in when it starts serving.
	const atMost = 12
	for _, tt := range changes {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i < 200; i += 7 {
				before, after := tt.before(cluster(200), i), tt.after(cluster(200), i)
				name, addrs := before[i].name, before[i].addresses
				if j := slices.IndexFunc(after, func(n RelayNode) bool { return n.name == name }); j >= 0 {
					addrs = append(slices.Clone(addrs), after[j].addresses...)
				}
				matters := 0
				for c := range credentials {
					uris, choice := URIsFor(ts, before, seed(c))
					got, _ := URIsFor(ts, after, seed(c))
					m := choice.NodeMatters(name, addrs)
					if m {
						matters++
					}
					if !slices.Equal(uris, got) && !m {
						t.Fatalf("%s %s: credential %d's URIs changed from %v to %v, but its choice said the node did not matter", name, tt.name, c, uris, got)
					}
				}
				if matters > atMost {
					t.Fatalf("%s %s: the choice of %d of %d credentials says it matters, want at most %d", name, tt.name, matters, credentials, atMost)
				}
			}
		})
	}
	t.Run("credentials spread over the nodes", func(t *testing.T) {
		seen := map[string]bool{}
		for c := range credentials {
			uris, _ := URIsFor(ts, cluster(200), seed(c))
			if len(uris) != 4 {
				t.Fatalf("credential %d got %v, want 4 URIs", c, uris)
			}
			for _, u := range uris {
				seen[u] = true
			}
		}
		// 400 picks of 200 nodes reach ~173 distinct ones.
		if len(seen) < 120 {
			t.Fatalf("100 credentials name only %d of 200 nodes", len(seen))
		}
	})
	t.Run("an IPv4-only cluster: the empty IPv6 family lets no node in", func(t *testing.T) {
		_, choice := URIsFor(ts, cluster(200), seed(0))
		matters := 0
		for _, n := range cluster(200) {
			if choice.NodeMatters(n.name, n.addresses) {
				matters++
			}
		}
		if matters != 4 { // the four chosen ones; nobody outranks them
			t.Fatalf("%d of 200 nodes matter, want the 4 chosen", matters)
		}
	})
	t.Run("hostname: the URIs are status.urls, which no node changes directly", func(t *testing.T) {
		named := rendertest.TurnServer("relay", func(ts *turnpikev1.TurnServer) {
			ts.Spec.Hostname = "turn.example.org"
			ts.Status.URLs = []string{"turn:turn.example.org:3478?transport=udp"}
		})
		uris, choice := URIsFor(named, cluster(10), seed(0))
		if !slices.Equal(uris, named.Status.URLs) || !choice.FromStatus || choice.NodeMatters("node-001", []netip.Addr{v4(1)}) {
			t.Fatalf("URIs %v, choice %+v", uris, choice)
		}
	})
	t.Run("no address known yet: status.urls, and any node with an address matters", func(t *testing.T) {
		nodes := []RelayNode{{name: "stun-a", serving: true}, {name: "b", addresses: []netip.Addr{v4(2)}}}
		uris, choice := URIsFor(ts, nodes, seed(0))
		if len(uris) != 0 || !choice.FromStatus || !choice.NodeMatters("b", []netip.Addr{v4(2)}) || choice.NodeMatters("stun-a", nil) {
			t.Fatalf("URIs %v, choice %+v", uris, choice)
		}
	})
	t.Run("the zero choice (nothing published yet) depends on no node", func(t *testing.T) {
		if (URLChoice{}).NodeMatters("node-001", []netip.Addr{v4(1)}) {
			t.Fatal("the zero URLChoice says a node matters")
		}
	})
}

func TestURIsNear(t *testing.T) {
	ts := rendertest.TurnServer("relay", func(ts *turnpikev1.TurnServer) { ts.Spec.URLNodesPerFamily = 4 })
	zones := []string{"zone-a", "zone-b", "zone-c"}
	var nodes []RelayNode
	zoneOf := map[string]string{} // URI -> zone
	for i := range 30 {
		n := RelayNode{name: fmt.Sprintf("node-%02d", i), addresses: []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})}, serving: true, zone: zones[i%3]}
		if n.zone == "zone-c" && i > 6 { // zone-c serves on two nodes only
			n.serving = false
		}
		nodes = append(nodes, n)
		zoneOf[turnURLs(ts, urlHosts(n.addresses))[0]] = n.zone
	}
	zonesOf := func(uris []string) map[string]int {
		count := map[string]int{}
		for _, u := range uris {
			count[zoneOf[u]]++
		}
		return count
	}
	tests := []struct {
		name, zone string
		want       func(map[string]int) bool
	}{
		{"a zone with enough nodes: only its own", "zone-b", func(c map[string]int) bool { return c["zone-b"] == 4 }},
		{"a zone with two serving nodes: both, and two of other zones", "zone-c", func(c map[string]int) bool {
			return c["zone-c"] == 2 && c["zone-a"]+c["zone-b"] == 2
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			for u := range 20 {
				uris := URIsNear(ts, nodes, fmt.Sprintf("user-%d", u), tt.zone, nil)
				if len(uris) != 4 || !tt.want(zonesOf(uris)) {
					t.Fatalf("user-%d in %s got %v (zones %v)", u, tt.zone, uris, zonesOf(uris))
				}
				for _, uri := range uris {
					seen[uri] = true
				}
			}
			if tt.zone == "zone-b" && len(seen) < 8 {
				t.Fatalf("20 users in zone-b were sent to %d of its 10 nodes", len(seen))
			}
		})
	}
	t.Run("no zone, or one without nodes: the same as without zones", func(t *testing.T) {
		for _, zone := range []string{"", "zone-z"} {
			want, _ := URIsFor(ts, nodes, "user-1")
			if got := URIsNear(ts, nodes, "user-1", zone, nil); !slices.Equal(got, want) {
				t.Fatalf("zone %q: %v, want %v", zone, got, want)
			}
		}
	})
}

func TestURIsNearLeastLoaded(t *testing.T) {
	two := rendertest.TurnServer("relay", func(ts *turnpikev1.TurnServer) { ts.Spec.URLNodesPerFamily = 2 })
	four := rendertest.TurnServer("relay", func(ts *turnpikev1.TurnServer) { ts.Spec.URLNodesPerFamily = 4 })
	var nodes []RelayNode
	nodeOf := map[string]string{} // URI -> node
	for i := range 20 {
		n := RelayNode{name: fmt.Sprintf("node-%02d", i), addresses: []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})}, serving: true, zone: []string{"zone-a", "zone-b"}[i%2]}
		nodes = append(nodes, n)
		nodeOf[turnURLs(two, urlHosts(n.addresses))[0]] = n.name
	}
	t.Run("equal loads: the user's own nodes", func(t *testing.T) {
		for u := range 20 {
			user := fmt.Sprintf("user-%d", u)
			want, _ := URIsFor(two, nodes, user)
			if got := URIsNear(two, nodes, user, "", map[string]int{}); !slices.Equal(got, want) {
				t.Fatalf("%s: %v, want %v", user, got, want)
			}
		}
	})
	t.Run("its two nodes busy: the next two of the user's order", func(t *testing.T) {
		for u := range 20 {
			user := fmt.Sprintf("user-%d", u)
			own, _ := URIsFor(two, nodes, user)
			next, _ := URIsFor(four, nodes, user) // own and the next two
			loads := map[string]int{nodeOf[own[0]]: 500, nodeOf[own[1]]: 80}
			got := URIsNear(two, nodes, user, "", loads)
			want := slices.DeleteFunc(slices.Clone(next), func(u string) bool { return slices.Contains(own, u) })
			if !slices.Equal(got, want) {
				t.Fatalf("%s: %v, want %v (own %v busy)", user, got, want, own)
			}
		}
	})
	t.Run("one busy node: no user is sent to it", func(t *testing.T) {
		loads := map[string]int{"node-07": 1000}
		for u := range 100 {
			for _, uri := range URIsNear(two, nodes, fmt.Sprintf("user-%d", u), "", loads) {
				if nodeOf[uri] == "node-07" {
					t.Fatalf("user-%d sent to the busy node-07", u)
				}
			}
		}
	})
	t.Run("the zone comes before the load", func(t *testing.T) {
		loads := map[string]int{}
		for _, n := range nodes {
			if n.zone == "zone-a" {
				loads[n.name] = 100
			}
		}
		for u := range 20 {
			for _, uri := range URIsNear(two, nodes, fmt.Sprintf("user-%d", u), "zone-a", loads) {
				if i := slices.IndexFunc(nodes, func(n RelayNode) bool { return n.name == nodeOf[uri] }); nodes[i].zone != "zone-a" {
					t.Fatalf("user-%d in zone-a sent to %s of another zone", u, nodeOf[uri])
				}
			}
		}
	})
}

// BenchmarkPickAddresses is the issuing endpoint's choice for one request
// among 10,000 serving dual-stack nodes.
func BenchmarkPickAddresses(b *testing.B) {
	var nodes []RelayNode
	for i := range 10000 {
		nodes = append(nodes, RelayNode{name: fmt.Sprintf("node-%05d", i), serving: true, addresses: []netip.Addr{
			netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}),
			netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}),
		}})
	}
	b.ResetTimer()
	for i := range b.N {
		if got := pickAddresses(fmt.Sprintf("user-%d", i), nodes, DefaultURLNodesPerFamily); len(got) != 2*DefaultURLNodesPerFamily {
			b.Fatalf("picked %d", len(got))
		}
	}
}
