package relay

import (
	"net/netip"
	"testing"

	"github.com/turnpike-dev/turnpike/relay/config"
)

func TestCanonicalPeer(t *testing.T) {
	for in, want := range map[string]string{
		"::ffff:127.0.0.1":                     "127.0.0.1", // v4-mapped
		"::127.0.0.1":                          "127.0.0.1", // v4-compatible
		"::a00:1":                              "10.0.0.1",  // v4-compatible, hex spelling
		"64:ff9b::a00:1":                       "10.0.0.1",  // NAT64
		"64:ff9b::7f00:1":                      "127.0.0.1", // NAT64
		"2002:7f00:1::":                        "127.0.0.1", // 6to4
		"2002:a9fe:a9fe::1":                    "169.254.169.254",
		"::":                                   "::",  // unspecified stays IPv6
		"::1":                                  "::1", // loopback stays IPv6
		"2001:db8::1":                          "2001:db8::1",
		"fe80::1%eth0":                         "fe80::1",
		"8.8.8.8":                              "8.8.8.8",
		"::ffff:0:0":                           "0.0.0.0",
		"64:ff9b:1::a00:1":                     "64:ff9b:1::a00:1", // local-use NAT64: the embedding is the operator's choice; refused as special-purpose
		"::ffff:0:a00:1":                       "10.0.0.1",         // IPv4-translated (SIIT)
		"::ffff:0:7f00:1":                      "127.0.0.1",
		"2001:0:4136:e378:8000:63bf:3fff:fdd2": "192.0.2.45", // Teredo, RFC 4380's example: client address inverted
		"2001:0:1:2:0:0:f5ff:fffe":             "10.0.0.1",
		"2003:7f00:1::":                        "2003:7f00:1::",
		"::ffff:192.168.1.1":                   "192.168.1.1",
	} {
		if got := canonicalPeer(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("canonicalPeer(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestPeerPolicy(t *testing.T) {
	node := []netip.Addr{netip.MustParseAddr("93.184.216.7"), netip.MustParseAddr("10.1.2.3")}
	defaults := mustPolicy(t, config.PeerPolicy{ClusterCIDRs: []string{"198.19.0.0/16", "2600:db8:c::/48"}}, node)
	allowAll := mustPolicy(t, config.PeerPolicy{
		// Tries to open everything, including the hard-deny set: must not work.
		Allow: []string{"0.0.0.0/0", "::/0"},
		Deny:  []string{"10.9.0.0/16"},
	}, node)

	tests := []struct {
		peer   string
		policy *peerPolicy
		ok     bool
		reason string
	}{
		{"8.8.8.8", defaults, true, ""},
		{"2001:4860:4860::8888", defaults, true, ""},
		// hard deny, in every spelling, even with allow 0.0.0.0/0
		{"127.0.0.1", allowAll, false, denyLoopback},
		{"127.255.0.1", allowAll, false, denyLoopback},
		{"::1", allowAll, false, denyLoopback},
		{"::ffff:127.0.0.1", allowAll, false, denyLoopback},
		{"::127.0.0.1", allowAll, false, denyLoopback},
		{"64:ff9b::7f00:1", allowAll, false, denyLoopback},
		{"2002:7f00:1::", allowAll, false, denyLoopback},
		{"0.0.0.0", allowAll, false, denyUnspecified},
		{"0.1.2.3", allowAll, false, denyUnspecified},
		{"::", allowAll, false, denyUnspecified},
		{"169.254.169.254", allowAll, false, denyLinkLocal},
		{"::ffff:169.254.169.254", allowAll, false, denyLinkLocal},
		{"fe80::1", allowAll, false, denyLinkLocal},
		{"224.0.0.1", allowAll, false, denyMulticast},
		{"239.255.255.250", allowAll, false, denyMulticast},
		{"ff02::1", allowAll, false, denyMulticast},
		{"255.255.255.255", allowAll, false, denyBroadcast},
		// default deny
		{"10.0.0.1", defaults, false, denyPrivate},
		{"64:ff9b::a00:1", defaults, false, denyPrivate},
		{"2002:a00:1::", defaults, false, denyPrivate},
		{"::a00:1", defaults, false, denyPrivate},
		{"172.16.5.4", defaults, false, denyPrivate},
		{"172.32.0.1", defaults, true, ""},
		{"192.168.1.1", defaults, false, denyPrivate},
		{"100.64.0.1", defaults, false, denyPrivate},
		{"100.128.0.1", defaults, true, ""},
		{"fd00::2", defaults, false, denyPrivate},
		{"198.19.3.4", defaults, false, denySpecialPurpose}, // benchmarking, before the cluster rule
		{"2600:db8:c::9", defaults, false, denyCluster},
		// every embedding of an IPv4 address is folded before the check
		{"::ffff:0:a00:1", defaults, false, denyPrivate},
		{"2001:0:1:2:0:0:f5ff:fffe", defaults, false, denyPrivate},  // Teredo client 10.0.0.1
		{"2001:0:1:2:0:0:80ff:fffe", allowAll, false, denyLoopback}, // Teredo client 127.0.0.1
		{"2001:0:1:2:0:0:b7b7:e9f8", defaults, true, ""},            // Teredo client 72.72.22.7: public
		{"64:ff9b:1:0:0:0:a00:1", allowAll, true, ""},               // local-use NAT64, allow-listed by ::/0
		{"64:ff9b:1::a00:1", defaults, false, denySpecialPurpose},   // not globally reachable
		// a node address passes the address check (its relay ports are
		// other allocations); checkPort refuses its other ports
		{"93.184.216.7", defaults, true, ""},
		{"::ffff:93.184.216.7", defaults, true, ""},
		{"10.1.2.3", defaults, true, ""},
		// allow re-admits default-deny ranges; deny wins over allow
		{"10.0.0.1", allowAll, true, ""},
		{"fd00::2", allowAll, true, ""},
		{"203.0.113.7", allowAll, true, ""},
		{"10.9.1.1", allowAll, false, denyDenyList},
		{"::ffff:10.9.1.1", allowAll, false, denyDenyList},
	}
	for _, tc := range tests {
		ok, reason := tc.policy.check(netip.MustParseAddr(tc.peer))
		if ok != tc.ok || reason != tc.reason {
			t.Errorf("check(%s) = %v %q, want %v %q", tc.peer, ok, reason, tc.ok, tc.reason)
		}
	}
	if ok, reason := defaults.check(netip.Addr{}); ok || reason != denyInvalid {
		t.Errorf("invalid address admitted: %v %q", ok, reason)
	}
}

// TestSpecialPurposeRegistries takes every row of the IANA special-purpose
// tables: an address of a row that is not globally reachable is refused
// by default and admitted when allow-listed, one of a globally reachable
// row (often inside a refused one) is admitted.
func TestSpecialPurposeRegistries(t *testing.T) {
	defaults := mustPolicy(t, config.PeerPolicy{}, nil)
	for _, row := range specialPurpose {
		// Inside the row, off the Teredo block inside 2001::/23 and off the
		// broadcast address at the end of 240.0.0.0/4.
		a := lastAddr(row.prefix)
		if !row.prefix.IsSingleIP() {
			a = a.Prev()
		}
		ok, reason := defaults.check(a)
		if row.global && !ok {
			t.Errorf("%s (%s, globally reachable): refused (%s)", a, row.name, reason)
		}
		if !row.global && (ok || reason != denySpecialPurpose) {
			t.Errorf("%s (%s, not globally reachable): %v %q, want refused as %s", a, row.name, ok, reason, denySpecialPurpose)
		}
		allowed := mustPolicy(t, config.PeerPolicy{Allow: []string{row.prefix.String()}}, nil)
		if ok, reason := allowed.check(a); !ok {
			t.Errorf("%s (%s) allow-listed: still refused (%s)", a, row.name, reason)
		}
	}
	for _, public := range []string{"192.0.1.255", "192.0.3.0", "198.17.255.255", "198.20.0.0", "223.255.255.255", "2001:200::1", "2600::1"} {
		if ok, reason := defaults.check(netip.MustParseAddr(public)); !ok {
			t.Errorf("%s is globally reachable but refused (%s)", public, reason)
		}
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestNodePorts: a node address is a peer only on the relay port range,
// unless an allow entry names that address itself; a broad allow does not
// open the node.
func TestNodePorts(t *testing.T) {
	node := []netip.Addr{netip.MustParseAddr("93.184.216.7"), netip.MustParseAddr("2600:1::7")}
	ports := config.PortRange{Min: 49152, Max: 65535}
	defaults, err := newPeerPolicy(config.PeerPolicy{}, node, ports)
	if err != nil {
		t.Fatal(err)
	}
	broad, _ := newPeerPolicy(config.PeerPolicy{Allow: []string{"0.0.0.0/0", "::/0"}}, node, ports)
	exact, _ := newPeerPolicy(config.PeerPolicy{Allow: []string{"93.184.216.7/32"}}, node, ports)
	// A host's loopback and link-local addresses (one per veth on a
	// Kubernetes node) are refused on every port anyway, so the per-packet
	// node scan leaves them out.
	withLocal, _ := newPeerPolicy(config.PeerPolicy{}, append(node, netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::2")), ports)
	if len(withLocal.node) != len(node) {
		t.Errorf("node scan list %v, want only %v", withLocal.node, node)
	}
	for _, tc := range []struct {
		policy *peerPolicy
		peer   string
		ok     bool
	}{
		{defaults, "93.184.216.7:49152", true},
		{defaults, "93.184.216.7:65535", true},
		{defaults, "93.184.216.7:49151", false},
		{defaults, "93.184.216.7:9641", false}, // the relay's metrics port
		{defaults, "[::ffff:93.184.216.7]:22", false},
		{defaults, "[64:ff9b::5db8:d807]:22", false}, // the node through a NAT64 gateway
		{defaults, "[2600:1::7]:443", false},
		{defaults, "[2600:1::7]:50000", true},
		{defaults, "93.184.216.8:22", true}, // not the node
		{broad, "93.184.216.7:22", false},
		{exact, "93.184.216.7:22", true},
		{exact, "[2600:1::7]:22", false},
	} {
		ok, reason := tc.policy.checkPort(netip.MustParseAddrPort(tc.peer))
		if ok != tc.ok || (!ok && reason != denyNode) {
			t.Errorf("checkPort(%s) = %v %q, want %v", tc.peer, ok, reason, tc.ok)
		}
	}
}

func TestPeerPolicyAllowInMappedForm(t *testing.T) {
	p := mustPolicy(t, config.PeerPolicy{Allow: []string{"::ffff:10.1.0.0/112"}}, nil)
	if ok, _ := p.check(netip.MustParseAddr("10.1.2.3")); !ok {
		t.Error("allow written as a v4-mapped prefix does not admit the IPv4 address")
	}
}

// FuzzPeerPolicy checks the invariants on arbitrary 16-byte addresses: an
// address whose canonical form is in the hard-deny set is refused no matter
// how it is spelled, even by a policy that allows everything.
func FuzzPeerPolicy(f *testing.F) {
	for _, s := range []string{"::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::1", "8.8.8.8", "fe80::1"} {
		a := netip.MustParseAddr(s).As16()
		f.Add(a[:])
	}
	allowAll := mustPolicy(f, config.PeerPolicy{Allow: []string{"0.0.0.0/0", "::/0"}}, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 16 {
			return
		}
		addr := netip.AddrFrom16([16]byte(b))
		canon := canonicalPeer(addr)
		if canonicalPeer(canon) != canon {
			t.Fatalf("canonicalPeer not idempotent: %s -> %s -> %s", addr, canon, canonicalPeer(canon))
		}
		ok, _ := allowAll.check(addr)
		hard := canon.IsLoopback() || canon.IsLinkLocalUnicast() || canon.IsMulticast() ||
			canon.IsUnspecified() || canon == netip.MustParseAddr("255.255.255.255") ||
			(canon.Is4() && canon.As4()[0] == 0)
		if hard && ok {
			t.Fatalf("%s (canonical %s) is hard-denied but was admitted", addr, canon)
		}
		if okV4, _ := allowAll.check(canon); ok != okV4 {
			t.Fatalf("%s and its canonical form %s get different verdicts", addr, canon)
		}
	})
}

func mustPolicy(t testing.TB, p config.PeerPolicy, node []netip.Addr) *peerPolicy {
	t.Helper()
	pp, err := newPeerPolicy(p, node, config.PortRange{Min: 49152, Max: 65535})
	if err != nil {
		t.Fatal(err)
	}
	return pp
}
