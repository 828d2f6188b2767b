package relay

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// startDualRelay starts a relay on this machine's non-loopback IPv4 and
// IPv6 addresses, which are also the peers it allows, with quotas.
func startDualRelay(t *testing.T, quotas config.Quotas, tweaks ...func(*config.Relay)) (tr *testRelay, ip4, ip6 netip.Addr) {
	t.Helper()
	if !haveIPv6() {
		needTool(t, "IPv6 loopback", false)
	}
	ip4, ip6 = localAddr(t, false, false), localAddr(t, true, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.Addresses.Bind = []string{ip4.String(), ip6.String()}
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(ip4, 32).String(), netip.PrefixFrom(ip6, 128).String()}
	cfg.Quotas = quotas
	for _, tweak := range tweaks {
		tweak(cfg)
	}
	return startRelay(t, cfg, baseCredentials()), ip4, ip6
}

// routedDuals is the number of clients whose requests go to an IPv6 half.
func routedDuals(r *Relay) int {
	r.duals.mu.RLock()
	defer r.duals.mu.RUnlock()
	return len(r.duals.byClient)
}

// dualAllocate sends a dual Allocate (ADDITIONAL-ADDRESS-FAMILY IPv6 under
// code point attr) twice with one transaction ID, as a client retransmits,
// and returns both answers.
func dualAllocate(t *testing.T, c *rawClient, attr stun.AttrType) (first, again *stun.Message) {
	t.Helper()
	c.fetchNonce()
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		requestedTransport(protoUDP), rawAttr(attr, []byte{familyIPv6, 0, 0, 0}),
		stun.NewUsername(c.username), stun.NewRealm(c.realm), c.nonce, c.integrity, stun.Fingerprint)
	for _, res := range []**stun.Message{&first, &again} {
		if _, err := c.conn.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		*res = c.awaitResponse(req.TransactionID)
	}
	return first, again
}

// relayedAddresses returns every XOR-RELAYED-ADDRESS of an Allocate answer.
func relayedAddresses(t *testing.T, res *stun.Message) []netip.AddrPort {
	t.Helper()
	var out []netip.AddrPort
	for _, a := range res.Attributes {
		if a.Type != stun.AttrXORRelayedAddress {
			continue
		}
		p, ok := decodeXORAddress(a.Value, res.TransactionID)
		if !ok {
			t.Fatalf("malformed XOR-RELAYED-ADDRESS %x", a.Value)
		}
		out = append(out, p)
	}
	return out
}

// TestDualAllocation relays through both halves of a dual allocation over
// UDP: Send and ChannelData to an IPv4 and an IPv6 peer, one channel
// number space, Refresh with and without REQUESTED-ADDRESS-FAMILY, and a
// Refresh to 0 that deletes both.
// Before dual.go the allocation had no IPv6 half: the answer carried 440
// for IPv6 and every IPv6 peer got 443.
func TestDualAllocation(t *testing.T) {
	tr, ip4, ip6 := startDualRelay(t, config.Quotas{})
	peer4, peer6 := startEchoPeer(t, ip4), startEchoPeer(t, ip6)
	c := dialRaw(t, "udp", net.JoinHostPort(ip4.String(), strconv.Itoa(tr.port)), testUser, testPassword)
	res, again := dualAllocate(t, c, attrAdditionalAddressFamily)
	relayed := relayedAddresses(t, res)
	if errorCode(res) != 0 || len(relayed) != 2 || !relayed[0].Addr().Is4() || !relayed[1].Addr().Is6() || res.Contains(attrAddressErrorCode) {
		t.Fatalf("dual Allocate: answer %d, relayed %v, ADDRESS-ERROR-CODE %v: want an IPv4 and an IPv6 address", errorCode(res), relayed, res.Contains(attrAddressErrorCode))
	}
	c.wantSigned("dual Allocate", res)
	if err := stun.Fingerprint.Check(res); err != nil {
		t.Errorf("dual Allocate: FINGERPRINT: %v", err)
	}
	if got := relayedAddresses(t, again); len(got) != 2 || got[0] != relayed[0] || got[1] != relayed[1] {
		t.Errorf("retransmitted dual Allocate: relayed %v, want %v", got, relayed)
	}

	for _, peer := range []netip.AddrPort{peer4.addr, peer6.addr} {
		if code := c.createPermission(peer.Addr()); code != 0 {
			t.Fatalf("CreatePermission %v: %d", peer, code)
		}
		if d := c.roundTrip(peer, 0, []byte("send to "+peer.String())); d.from != peer {
			t.Errorf("echo through a Send to %v came from %v", peer, d.from)
		}
	}
	for i, peer := range []netip.AddrPort{peer6.addr, peer4.addr} {
		number := uint16(0x4001 + i)
		if code := c.channelBind(number, peer); code != 0 {
			t.Fatalf("ChannelBind %#x to %v: %d", number, peer, code)
		}
		if d := c.roundTrip(peer, number, []byte("channel to "+peer.String())); d.channel != number {
			t.Errorf("echo on channel %#x came on %#x", number, d.channel)
		}
	}

	// Peers of both families in one CreatePermission: the halves are two
	// pion allocations, so the request is answered 443 and installs nothing.
	res = c.request(stun.MethodCreatePermission, xorPeer(netip.AddrPortFrom(ip6, 9)), xorPeer(netip.AddrPortFrom(ip4, 9)))
	if code := errorCode(res); code != int(stun.CodePeerAddrFamilyMismatch) {
		t.Errorf("CreatePermission with an IPv6 and an IPv4 peer: %d, want 443", code)
	}

	// One allocation to the client: a channel number is bound to one peer
	// (pion checks that within each half only).
	for i, peer := range []netip.AddrPort{netip.AddrPortFrom(ip4, 9), netip.AddrPortFrom(ip6, 9)} {
		if code := c.channelBind(uint16(0x4001+i), peer); code != int(stun.CodeBadRequest) {
			t.Errorf("ChannelBind %#x, bound to a peer of the other family, to %v: %d, want 400", 0x4001+i, peer, code)
		}
	}

	if code := c.refresh(600); code != 0 {
		t.Errorf("Refresh of both halves: %d", code)
	}
	for _, family := range []byte{familyIPv4, familyIPv6} {
		res := c.request(stun.MethodRefresh, lifetimeAttr(600), rawAttr(stun.AttrRequestedAddressFamily, []byte{family, 0, 0, 0}))
		if code := errorCode(res); code != 0 {
			t.Errorf("Refresh with REQUESTED-ADDRESS-FAMILY %d: %d", family, code)
		}
	}
	if total, _ := tr.Relay.allocs.counts(testUser); total != 2 {
		t.Errorf("the relay tracks %d allocations, want 2 (one per half)", total)
	}

	if code := c.refresh(0); code != 0 {
		t.Fatalf("Refresh to 0: %d", code)
	}
	waitFor(t, "both halves to be deleted", func() bool {
		total, _ := tr.Relay.allocs.counts(testUser)
		return total == 0 && routedDuals(tr.Relay) == 0
	})
	for _, a := range relayed {
		if !canBindUDP(a) {
			t.Errorf("relayed address %v is still held after the Refresh to 0", a)
		}
	}
}

// TestDualAllocationFallback: where the IPv6 half cannot be had (here the
// user's allocation quota is 1; on a stream connection the wrapper cannot
// add it), a dual Allocate gets RFC 8656's other answer, IPv4 and an
// ADDRESS-ERROR-CODE 440 for IPv6, and the allocation is a plain IPv4 one.
func TestDualAllocationFallback(t *testing.T) {
	tr, ip4, ip6 := startDualRelay(t, config.Quotas{AllocationsPerUser: 1})
	addr := net.JoinHostPort(ip4.String(), strconv.Itoa(tr.port))
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			c := dialRaw(t, network, addr, testUser, testPassword)
			res, _ := dualAllocate(t, c, attrAdditionalAddressFamilyDraft)
			relayed := relayedAddresses(t, res)
			addressError, _ := res.Get(attrAddressErrorCodeDraft)
			if errorCode(res) != 0 || len(relayed) != 1 || !relayed[0].Addr().Is4() ||
				len(addressError) < 4 || addressError[0] != familyIPv6 || int(addressError[2]&7)*100+int(addressError[3]) != 440 {
				t.Fatalf("dual Allocate: answer %d, relayed %v, 0x8033 %x: want IPv4 and 440 for IPv6", errorCode(res), relayed, addressError)
			}
			c.wantSigned("dual Allocate", res)
			if code := c.createPermission(ip6); code != int(stun.CodePeerAddrFamilyMismatch) {
				t.Errorf("CreatePermission to an IPv6 peer: %d, want 443", code)
			}
			if code := c.refresh(0); code != 0 {
				t.Fatalf("Refresh to 0: %d", code)
			}
			waitFor(t, "the allocation to be deleted", func() bool {
				total, _ := tr.Relay.allocs.counts(testUser)
				return total == 0 && routedDuals(tr.Relay) == 0
			})
		})
	}
}

// TestDualAllocationChannelQuota: each half is an allocation for the
// per-allocation limits, and the channel limit holds on the IPv6 half
// (pion asks the PermissionHandler about the stand-in's allocation, so the
// gate marks the pending ChannelBind there).
func TestDualAllocationChannelQuota(t *testing.T) {
	tr, ip4, ip6 := startDualRelay(t, config.Quotas{ChannelsPerAllocation: 1})
	c := dialRaw(t, "udp", net.JoinHostPort(ip4.String(), strconv.Itoa(tr.port)), testUser, testPassword)
	if res, _ := dualAllocate(t, c, attrAdditionalAddressFamily); len(relayedAddresses(t, res)) != 2 {
		t.Fatalf("dual Allocate: answer %d, relayed %v", errorCode(res), relayedAddresses(t, res))
	}
	for _, tc := range []struct {
		number uint16
		peer   netip.AddrPort
		want   int
	}{
		{0x4001, netip.AddrPortFrom(ip6, 9), 0},
		{0x4002, netip.AddrPortFrom(ip6, 10), int(stun.CodeForbidden)},
		{0x4003, netip.AddrPortFrom(ip4, 9), 0},
		{0x4004, netip.AddrPortFrom(ip4, 10), int(stun.CodeForbidden)},
	} {
		if code := c.channelBind(tc.number, tc.peer); code != tc.want {
			t.Errorf("ChannelBind %#x to %v: %d, want %d", tc.number, tc.peer, code, tc.want)
		}
	}
}

// sourcesConn returns one ChannelData datagram from each of its sources.
type sourcesConn struct {
	fakePacketConn
	sources []net.Addr
}

func (s *sourcesConn) ReadFrom(p []byte) (int, net.Addr, error) {
	from := s.sources[0]
	s.sources = s.sources[1:]
	return copy(p, []byte{0x40, 0x01, 0x00, 0x00}), from, nil
}

// TestStandInSourceDropped: a datagram that claims a stand-in client
// address as its source is forged (100::/64 is discard-only); pion never
// sees it, so it cannot reach a dual allocation's IPv6 half.
func TestStandInSourceDropped(t *testing.T) {
	standIn := &net.UDPAddr{IP: net.ParseIP("100::1"), Port: 4000}
	real := &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 4000}
	e, rejected := testEdge(nil)
	c := &clientPacketConn{PacketConn: &sourcesConn{fakePacketConn: fakePacketConn{from: real}, sources: []net.Addr{standIn, real}}, edge: e}
	_, from, err := c.ReadFrom(make([]byte, 1600))
	if err != nil || from != real || len(*rejected) != 1 || (*rejected)[0] != frameStandInSource {
		t.Fatalf("pion read from %v (%v), rejected %v; want the datagram from %v only, %s rejected", from, err, *rejected, real, frameStandInSource)
	}
}

// TestDualAllocationDeleteOneFamily: a Refresh with LIFETIME 0 and
// REQUESTED-ADDRESS-FAMILY deletes that family's half only. Without the
// IPv6 half the client has a plain IPv4 allocation (443 for IPv6 peers);
// without the IPv4 half, the IPv6 one serves every request (443 for IPv4
// peers).
func TestDualAllocationDeleteOneFamily(t *testing.T) {
	tr, ip4, ip6 := startDualRelay(t, config.Quotas{})
	addr := net.JoinHostPort(ip4.String(), strconv.Itoa(tr.port))
	deleteFamily := func(c *rawClient, family byte) int {
		return errorCode(c.request(stun.MethodRefresh, lifetimeAttr(0), rawAttr(stun.AttrRequestedAddressFamily, []byte{family, 0, 0, 0})))
	}

	c := dialRaw(t, "udp", addr, testUser, testPassword)
	res, _ := dualAllocate(t, c, attrAdditionalAddressFamily)
	relayed := relayedAddresses(t, res)
	if len(relayed) != 2 {
		t.Fatalf("dual Allocate: answer %d, relayed %v", errorCode(res), relayed)
	}
	if code := deleteFamily(c, familyIPv6); code != 0 {
		t.Fatalf("Refresh deleting IPv6: %d", code)
	}
	waitFor(t, "the IPv6 half to be deleted", func() bool { return canBindUDP(relayed[1]) })
	if code := c.createPermission(ip6); code != int(stun.CodePeerAddrFamilyMismatch) {
		t.Errorf("CreatePermission to an IPv6 peer without the IPv6 half: %d, want 443", code)
	}
	if code := c.createPermission(ip4); code != 0 {
		t.Errorf("CreatePermission to an IPv4 peer: %d", code)
	}

	c = dialRaw(t, "udp", addr, testUser, testPassword)
	res, _ = dualAllocate(t, c, attrAdditionalAddressFamily)
	if relayed = relayedAddresses(t, res); len(relayed) != 2 {
		t.Fatalf("dual Allocate: answer %d, relayed %v", errorCode(res), relayed)
	}
	if code := deleteFamily(c, familyIPv4); code != 0 {
		t.Fatalf("Refresh deleting IPv4: %d", code)
	}
	waitFor(t, "the IPv4 half to be deleted", func() bool { return canBindUDP(relayed[0]) })
	if code := c.createPermission(ip6); code != 0 {
		t.Errorf("CreatePermission to an IPv6 peer without the IPv4 half: %d, want 0", code)
	}
	if code := c.createPermission(ip4); code != int(stun.CodePeerAddrFamilyMismatch) {
		t.Errorf("CreatePermission to an IPv4 peer without the IPv4 half: %d, want 443", code)
	}
	if code := c.refresh(600); code != 0 {
		t.Errorf("Refresh without the IPv4 half: %d, want 0", code)
	}
	if code := deleteFamily(c, familyIPv6); code != 0 {
		t.Fatalf("Refresh deleting IPv6: %d", code)
	}
	waitFor(t, "both halves to be deleted", func() bool {
		total, _ := tr.Relay.allocs.counts(testUser)
		return total == 1 && routedDuals(tr.Relay) == 0 // the first client's IPv4 allocation is left
	})
}

// TestStandInLingers: pion deletes an IPv6 half before it answers the
// Refresh that deleted it, so the stand-in leads to the client for a while
// after; the sweep forgets it.
func TestStandInLingers(t *testing.T) {
	table := newDualTable()
	client := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	standIn := grantDual(t, table, client, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 3478}, 0x4000)
	_, ap, _ := addrPort(standIn)
	table.forget(allocKey{network: "udp", port: 3478, client: ap})
	if got := table.clientOf(standIn); got.String() != client.String() {
		t.Fatalf("right after the IPv6 half's deletion the stand-in leads to %v, want %v", got, client)
	}
	table.sweep(timeNow().Add(2 * standInLinger))
	if got := table.clientOf(standIn); got != standIn || table.count.Load() != 0 {
		t.Errorf("after the sweep the stand-in leads to %v (%d entries), want nowhere", got, table.count.Load())
	}
}

// TestUnansweredDualAllocateSwept: a dual Allocate pion never answered
// (its socket closed in between) does not stay in the table.
func TestUnansweredDualAllocateSwept(t *testing.T) {
	table := newDualTable()
	k, _ := keyFor(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 3478})
	table.prepare(k, &stun.Message{}, nil, []byte{1})
	table.sweep(timeNow())
	if table.count.Load() != 1 {
		t.Fatal("a dual Allocate just prepared was swept")
	}
	table.sweep(timeNow().Add(2 * standInLinger))
	if n := table.count.Load(); n != 0 || len(table.byClient) != 0 || len(table.byStandIn) != 0 {
		t.Errorf("after the sweep %d entries (%d, %d), want none", n, len(table.byClient), len(table.byStandIn))
	}
}

// FuzzDualTable hands the dual table what a client of a dual allocation
// may send and what pion may write back: it must not panic.
func FuzzDualTable(f *testing.F) {
	refresh := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(600))
	bind := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		rawAttr(stun.AttrChannelNumber, []byte{0x40, 0x01, 0, 0}), xorPeer(netip.MustParseAddrPort("[2001:db8::1]:9")))
	answer := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse))
	for _, seed := range [][]byte{refresh.Raw, bind.Raw, answer.Raw, {0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}} {
		f.Add(seed)
	}
	client := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	local := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 3478}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if _, reason := checkDatagram(msg); reason != "" {
			return // the wrapper drops it before
		}
		table := newDualTable()
		standIn := grantDual(t, table, client, local, 0x4000)
		table.inbound(msg, client, local)
		table.outbound(msg, client, local)
		table.outbound(msg, standIn, local)
	})
}

// TestDualAllocationFastPath: with the fast path on, the IPv4 half's
// channel goes into the kernel and the IPv6 half's stays in userspace
// (the kernel would send its data to the stand-in); both relay. Loading
// BPF programs needs root.
func TestDualAllocationFastPath(t *testing.T) {
	needTool(t, "root (loading the fast path's BPF program)", os.Geteuid() == 0)
	tr, ip4, ip6 := startDualRelay(t, config.Quotas{}, func(cfg *config.Relay) {
		cfg.FastPath = config.FastPath{Enabled: true, Interfaces: []string{"lo"}}
	})
	if st := relayStatus(t, tr).FastPath; st == nil || !st.Active {
		t.Fatalf("/status fastPath = %+v, want active\n%s", st, tr.logs)
	}
	peer4, peer6 := startEchoPeer(t, ip4), startEchoPeer(t, ip6)
	c := dialRaw(t, "udp", net.JoinHostPort(ip4.String(), strconv.Itoa(tr.port)), testUser, testPassword)
	if res, _ := dualAllocate(t, c, attrAdditionalAddressFamily); len(relayedAddresses(t, res)) != 2 {
		t.Fatalf("dual Allocate: answer %d, relayed %v", errorCode(res), relayedAddresses(t, res))
	}
	for i, peer := range []netip.AddrPort{peer4.addr, peer6.addr} {
		if code := c.channelBind(uint16(0x4001+i), peer); code != 0 {
			t.Fatalf("ChannelBind %#x to %v: %d", 0x4001+i, peer, code)
		}
	}
	wantChannels(t, tr, 1)
	for i, peer := range []netip.AddrPort{peer4.addr, peer6.addr} {
		number := uint16(0x4001 + i)
		for j := range 5 {
			if d := c.roundTrip(peer, number, []byte("fast path "+strconv.Itoa(j))); d.channel != number {
				t.Fatalf("echo from %v came as %+v, want ChannelData on %#x", peer, d, number)
			}
		}
	}
}
