package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// fakePacketConn returns the same datagram on every read and swallows writes.
type fakePacketConn struct {
	net.PacketConn
	datagram []byte
	from     net.Addr
}

func (f *fakePacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	return copy(p, f.datagram), f.from, nil
}
func (f *fakePacketConn) WriteTo(p []byte, _ net.Addr) (int, error) { return len(p), nil }
func (f *fakePacketConn) LocalAddr() net.Addr                       { return f.from }

func testMeter(limit int64) *meter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	return &meter{counters: trafficCounters{packets: c, bytes: c}, limiter: newLimiter(limit), dropped: func() {}}
}

// TestPerPacketPathDoesNotAllocate guards the hot path: relaying a datagram
// through our wrappers must not allocate.
func TestPerPacketPathDoesNotAllocate(t *testing.T) {
	peer := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	// The node-port check runs on every packet too.
	policy := mustPolicy(t, config.PeerPolicy{}, []netip.Addr{netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::9")})
	node := nodePorts{policy: func() *peerPolicy { return policy }, denied: func() {}}
	relay := &meteredPacketConn{PacketConn: &fakePacketConn{datagram: make([]byte, 1200), from: peer}, toPeer: testMeter(0), fromPeer: testMeter(1 << 40), node: node}
	channelData := append([]byte{0x40, 0x00, 0x04, 0xb0}, make([]byte, 1200)...)
	client := &clientPacketConn{PacketConn: &fakePacketConn{datagram: channelData, from: peer}, edge: gateFatal(t)}
	buf := make([]byte, 1600)
	payload := make([]byte, 1200)
	// With dual allocations (dual.go): ChannelData of another client, and
	// of a client's IPv6 half both ways.
	otherDual := &clientPacketConn{PacketConn: &fakePacketConn{datagram: channelData, from: peer}, edge: gateFatal(t)}
	otherDual.edge.duals = newDualTable()
	grantDual(t, otherDual.edge.duals, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 7}, peer, 0x4000)
	ownDual := &clientPacketConn{PacketConn: &fakePacketConn{datagram: channelData, from: peer}, edge: gateFatal(t)}
	ownDual.edge.duals = newDualTable()
	standIn := grantDual(t, ownDual.edge.duals, peer, peer, 0x4000)
	for name, fn := range map[string]func(){
		"relay WriteTo":               func() { _, _ = relay.WriteTo(payload, peer) },
		"relay ReadFrom":              func() { _, _, _ = relay.ReadFrom(buf) },
		"client ReadFrom ChannelData": func() { _, _, _ = client.ReadFrom(buf) },
		"client WriteTo ChannelData":  func() { _, _ = client.WriteTo(channelData, peer) },
		"client ReadFrom ChannelData, another's dual allocation": func() { _, _, _ = otherDual.ReadFrom(buf) },
		"client ReadFrom ChannelData, IPv6 half":                 func() { _, _, _ = ownDual.ReadFrom(buf) },
		"client WriteTo ChannelData, IPv6 half":                  func() { _, _ = ownDual.WriteTo(channelData, standIn) },
	} {
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", name, n)
		}
	}
}

// TestBandwidthQuota freezes the clock: the token bucket then holds exactly
// its burst, so what passes and what is dropped is deterministic.
func TestBandwidthQuota(t *testing.T) {
	frozen := time.Now()
	timeNow = func() time.Time { return frozen }
	defer func() { timeNow = time.Now }()
	m := testMeter(100_000) // burst: max(10 kB, 64 KiB) = 65536 bytes
	admitted := 0
	for range 100 {
		if m.admit(1000) {
			admitted++
		}
	}
	if admitted != 65 {
		t.Errorf("admitted %d packets of 1000 bytes, want 65 (the 64 KiB burst)", admitted)
	}
	frozen = frozen.Add(time.Second) // one second refills 100 kB, capped at the burst
	if !m.admit(1000) {
		t.Error("no packet admitted after the bucket refilled")
	}
}

// grantDual enters a granted dual allocation of client (on local) into
// table, with channel bound on its IPv6 half, and returns the stand-in.
func grantDual(t testing.TB, table *dualTable, client, local *net.UDPAddr, channel uint16) net.Addr {
	k, ok := keyFor(client, local)
	if !ok {
		t.Fatal("no allocation key")
	}
	table.prepare(k, &stun.Message{}, nil, []byte{1})
	d := table.byClient[k]
	d.request = nil
	table.channelEvent(allocKey{network: k.network, port: k.port, client: d.standIn}, channel, true)
	return d.standInAddr
}

// BenchmarkClientReadFromChannelData is what dual allocations cost the
// client-to-peer path: nothing while there are none, a table lookup under
// a read lock while there are.
func BenchmarkClientReadFromChannelData(b *testing.B) {
	client := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	channelData := append([]byte{0x40, 0x00, 0x04, 0xb0}, make([]byte, 1200)...)
	for _, tc := range []struct {
		name    string
		dualFor *net.UDPAddr // nil: no dual allocation
	}{
		{"no dual allocation", nil},
		{"another's dual allocation", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 7}},
		{"IPv6 half", client},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := &clientPacketConn{PacketConn: &fakePacketConn{datagram: channelData, from: client}, edge: &edge{}}
			if tc.dualFor != nil {
				c.edge.duals = newDualTable()
				grantDual(b, c.edge.duals, tc.dualFor, client, 0x4000)
			}
			buf := make([]byte, 1600)
			b.ReportAllocs()
			for b.Loop() {
				_, _, _ = c.ReadFrom(buf)
			}
		})
	}
}

func BenchmarkRelayWriteTo(b *testing.B) {
	peer := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	relay := &meteredPacketConn{PacketConn: &fakePacketConn{from: peer}, toPeer: testMeter(0), fromPeer: testMeter(0)}
	payload := make([]byte, 1200)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = relay.WriteTo(payload, peer)
	}
}

func TestFixChannelBindForbidden(t *testing.T) {
	deniedByPolicy := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized})
	fixed, changed := fixChannelBindForbidden(deniedByPolicy.Raw)
	m := &stun.Message{Raw: fixed}
	if !changed || m.Decode() != nil || errorCode(m) != 403 || m.TransactionID != deniedByPolicy.TransactionID {
		t.Errorf("policy 401 not turned into 403: changed=%v code=%d", changed, errorCode(m))
	}
	needsAuth := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}, stun.NewNonce("n"), stun.NewRealm("r"))
	if _, changed := fixChannelBindForbidden(needsAuth.Raw); changed {
		t.Error("a genuine 401 (with NONCE) was rewritten")
	}
	other := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized})
	if _, changed := fixChannelBindForbidden(other.Raw); changed {
		t.Error("a non-ChannelBind response was rewritten")
	}
}

// gateFatal is an edge whose gate fails the test: for paths that must not
// reach it.
func gateFatal(t *testing.T) *edge {
	e, _ := testEdge(func([]byte) bool { t.Fatal("message gated"); return false })
	return e
}
