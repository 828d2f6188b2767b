package relay

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/netlab"
)

// The STUN tests run test STUN servers on loopback that report a chosen
// address (TEST-NET-3), as a server behind a NAT would see it. The relay
// only advertises these addresses; no packet is ever sent to them.
// test/netlab's TestSTUNDiscoveryBehindNAT runs the same through a real NAT.

func startTestSTUN(t *testing.T) *netlab.STUNServer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return netlab.StartSTUNServer(t, conn)
}

// stunConfig is baseConfig, IPv4 only, with this node relying on STUN and
// addresses.external as the fallback.
func stunConfig(t *testing.T, peerIP netip.Addr, servers ...*netlab.STUNServer) *config.Relay {
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	cfg.Addresses.Bind = []string{"127.0.0.1"}
	cfg.Addresses.External = []string{"192.0.2.1"}
	cfg.Addresses.Nodes = map[string]config.NodeAddresses{harnessNode: {Source: "STUN"}}
	cfg.Addresses.STUN = &config.STUNDiscovery{}
	for _, s := range servers {
		cfg.Addresses.STUN.Servers = append(cfg.Addresses.STUN.Servers, s.Addr().String())
	}
	return cfg
}

// TestSTUNDiscovery: servers are tried in order; a relay reports ready
// already advertising the discovered address; a changed mapping applies to
// new allocations while an old one keeps relaying; a node entry with an
// address wins over STUN.
func TestSTUNDiscovery(t *testing.T) {
	peerIP := localAddr(t, false, false)
	broken, good := startTestSTUN(t), startTestSTUN(t)
	broken.SetFailing(true)
	good.SetMapped(netip.MustParseAddr("203.0.113.10"))
	cfg := stunConfig(t, peerIP, broken, good)
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	source := "stun:" + good.Addr().String()

	old := dialRaw(t, "udp", addr, testUser, testPassword)
	if got := old.mustAllocate(false).Addr().String(); got != "203.0.113.10" {
		t.Fatalf("first allocation: XOR-RELAYED-ADDRESS %s, want the discovered 203.0.113.10", got)
	}
	checkAdvertised(t, tr, "203.0.113.10", source)
	if broken.Requests() == 0 {
		t.Error("the first server was not asked first")
	}
	st := relayStatus(t, tr)
	if st.STUN == nil || len(st.STUN.Discovered) != 1 || st.STUN.Discovered[0].Address != "203.0.113.10" ||
		st.STUN.Discovered[0].Server != good.Addr().String() || st.STUN.LastError != "" {
		t.Errorf("/status stun = %+v", st.STUN)
	}
	if code := old.createPermission(peerIP); code != 0 {
		t.Fatalf("CreatePermission: %d", code)
	}
	old.roundTrip(peer.addr, 0, []byte("before the mapping changed"))

	// The NAT's outer address changes; the next round (here requested as
	// SIGHUP or a config change would) finds it.
	good.SetMapped(netip.MustParseAddr("203.0.113.20"))
	tr.stun.wakeUp()
	waitFor(t, "the new mapping to be advertised", func() bool {
		return strings.Join(relayStatus(t, tr).ExternalAddresses, ",") == "203.0.113.20"
	})
	if got := dialRaw(t, "udp", addr, testUser, testPassword).mustAllocate(false).Addr().String(); got != "203.0.113.20" {
		t.Errorf("allocation after the change: %s, want 203.0.113.20", got)
	}
	checkAdvertised(t, tr, "203.0.113.20", source)
	old.roundTrip(peer.addr, 0, []byte("old allocation after the mapping changed"))
	if n := counterValue(t, tr.Relay, "turnpike_relay_stun_discovery_total", "result", "success"); n < 2 {
		t.Errorf("stun_discovery_total{result=success} = %v, want >= 2", n)
	}
	if n := counterValue(t, tr.Relay, "turnpike_relay_stun_discovery_total", "result", "failure"); n != 0 {
		t.Errorf("stun_discovery_total{result=failure} = %v, want 0 (the second server answered)", n)
	}

	// The first server recovers with the same answer: the address stays,
	// the source shown follows the server that answered.
	broken.SetMapped(netip.MustParseAddr("203.0.113.20"))
	broken.SetFailing(false)
	tr.stun.wakeUp()
	waitFor(t, "the first server to be the source", func() bool {
		return relayStatus(t, tr).ExternalAddressSource == "stun:"+broken.Addr().String()
	})
	checkAdvertised(t, tr, "203.0.113.20", "stun:"+broken.Addr().String())

	// The operator learns the node's address: its entry wins over STUN.
	next := *cfg
	next.Addresses.Nodes = map[string]config.NodeAddresses{harnessNode: {External: []string{"198.51.100.7"}, Source: "ExternalIP"}}
	tr.writeFiles(t, &next, nil)
	tr.Reload()
	if got := dialRaw(t, "udp", addr, testUser, testPassword).mustAllocate(false).Addr().String(); got != "198.51.100.7" {
		t.Errorf("with a node address: %s, want 198.51.100.7", got)
	}
	old.roundTrip(peer.addr, 0, []byte("old allocation after the reload"))
}

// TestSTUNDiscoveryFallback: while discovery fails the relay advertises the
// next source and counts the failure; the retry after the failure picks up
// a recovered server without any trigger; a failed round keeps a known
// address until it goes stale.
func TestSTUNDiscoveryFallback(t *testing.T) {
	clock := useFakeClock(t)
	peerIP := localAddr(t, false, false)
	srv := startTestSTUN(t)
	srv.SetFailing(true)
	srv.SetMapped(netip.MustParseAddr("203.0.113.30"))
	tr := startRelay(t, stunConfig(t, peerIP, srv), baseCredentials())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	allocate := func() string {
		return dialRaw(t, "udp", addr, testUser, testPassword).mustAllocate(false).Addr().String()
	}
	failures := func() float64 {
		return counterValue(t, tr.Relay, "turnpike_relay_stun_discovery_total", "result", "failure")
	}

	if got := allocate(); got != "192.0.2.1" {
		t.Fatalf("discovery failing: advertised %s, want addresses.external 192.0.2.1", got)
	}
	checkAdvertised(t, tr, "192.0.2.1", "addresses.external")
	if failures() == 0 {
		t.Error("the failed discovery was not counted")
	}
	if st := relayStatus(t, tr); st.STUN == nil || !strings.Contains(st.STUN.LastError, "500") {
		t.Errorf("/status stun = %+v, want the error", st.STUN)
	}

	srv.SetFailing(false)
	waitFor(t, "the retry to discover the address", func() bool {
		return relayStatus(t, tr).ExternalAddressSource == "stun:"+srv.Addr().String()
	})
	if got := allocate(); got != "203.0.113.30" {
		t.Fatalf("after recovery: advertised %s, want 203.0.113.30", got)
	}

	// One failed round keeps the address...
	srv.SetFailing(true)
	before := failures()
	tr.stun.wakeUp()
	waitFor(t, "a failed round", func() bool { return failures() > before })
	if got := allocate(); got != "203.0.113.30" {
		t.Errorf("after one failed round: advertised %s, want the kept 203.0.113.30", got)
	}
	// ...until no server confirmed it for three intervals.
	clock.advance(stunStaleIntervals*defaultSTUNInterval + time.Second)
	tr.stun.wakeUp()
	waitFor(t, "the stale address to be dropped", func() bool {
		return relayStatus(t, tr).ExternalAddressSource == "addresses.external"
	})
	if got := allocate(); got != "192.0.2.1" {
		t.Errorf("after the address went stale: advertised %s, want 192.0.2.1", got)
	}
}

// TestSTUNLookupErrors: a silent server times out (bounded), and a server
// of the wrong family or a malformed entry fails at once.
func TestSTUNLookupErrors(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	local := netip.MustParseAddr("127.0.0.1")
	ctx := context.Background()
	if _, err := stunLookup(ctx, local, silent.LocalAddr().String()); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("silent server: %v, want no answer", err)
	}
	if _, err := stunLookup(ctx, local, "[::1]:3478"); err == nil {
		t.Error("an IPv6 server was asked from an IPv4 address")
	}
	for _, bad := range []string{"stun.example.net", ":3478", "stun.example.net:0", "stun.example.net:stun"} {
		if err := validateSTUNServers([]string{bad}); err == nil {
			t.Errorf("server %q accepted", bad)
		}
	}
	if err := validateSTUNServers([]string{"stun.example.net:3478", "[2001:db8::1]:3478", "192.0.2.1:19302"}); err != nil {
		t.Error(err)
	}
}
