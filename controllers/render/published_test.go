package render

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
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
