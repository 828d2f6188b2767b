package relay

import (
	"net/netip"
	"testing"

	"github.com/turnpike-dev/turnpike/relay/config"
)

func TestCanonicalPeer(t *testing.T) {
	for in, want := range map[string]string{
		"::ffff:127.0.0.1":   "127.0.0.1", // v4-mapped
		"::127.0.0.1":        "127.0.0.1", // v4-compatible
		"::a00:1":            "10.0.0.1",  // v4-compatible, hex spelling
		"64:ff9b::a00:1":     "10.0.0.1",  // NAT64
		"64:ff9b::7f00:1":    "127.0.0.1", // NAT64
		"2002:7f00:1::":      "127.0.0.1", // 6to4
		"2002:a9fe:a9fe::1":  "169.254.169.254",
		"::":                 "::",  // unspecified stays IPv6
		"::1":                "::1", // loopback stays IPv6
		"2001:db8::1":        "2001:db8::1",
		"fe80::1%eth0":       "fe80::1",
		"8.8.8.8":            "8.8.8.8",
		"::ffff:0:0":         "0.0.0.0",
		"64:ff9b:1::a00:1":   "64:ff9b:1::a00:1", // local-use NAT64 prefix is not the well-known one
		"2003:7f00:1::":      "2003:7f00:1::",
		"::ffff:192.168.1.1": "192.168.1.1",
	} {
		if got := canonicalPeer(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("canonicalPeer(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestPeerPolicy(t *testing.T) {
	node := []netip.Addr{netip.MustParseAddr("203.0.113.7")}
	defaults := mustPolicy(t, config.PeerPolicy{ClusterCIDRs: []string{"198.18.0.0/16", "2001:db8:c::/48"}}, node)
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
		{"198.18.3.4", defaults, false, denyCluster},
		{"2001:db8:c::9", defaults, false, denyCluster},
		{"203.0.113.7", defaults, false, denyNode},
		{"::ffff:203.0.113.7", defaults, false, denyNode},
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
	pp, err := newPeerPolicy(p, node)
	if err != nil {
		t.Fatal(err)
	}
	return pp
}
