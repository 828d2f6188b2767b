package relay

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

// TestSameRelayCall is the commonest WebRTC call through TURN: both peers
// relay through the same relay, so each one's peer is the other's relayed
// address, an address of the relay's own node. Under the default peer
// policy (no allow list) it must work, over Send indications and channels,
// while every other port of the node stays out of reach: an echo server
// on the node's address outside the relay port range, and the relay's own
// metrics and health ports.
func TestSameRelayCall(t *testing.T) {
	nodeIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.Addresses.Bind = []string{nodeIP.String()}
	cfg.Internal.Address = nodeIP.String()
	cfg.TCPRelay = true
	tr := startRelay(t, cfg, baseCredentials())
	addr := net.JoinHostPort(nodeIP.String(), strconv.Itoa(tr.port))

	alice := dialRaw(t, "udp", addr, testUser, testPassword)
	bob := dialRaw(t, "udp", addr, testUser, testPassword)
	aliceRelayed, bobRelayed := alice.mustAllocate(false), bob.mustAllocate(false)
	if aliceRelayed.Addr() != nodeIP || bobRelayed.Addr() != nodeIP {
		t.Fatalf("relayed addresses %s, %s: want the node's %s", aliceRelayed, bobRelayed, nodeIP)
	}
	for _, c := range []struct {
		from *rawClient
		to   netip.AddrPort
	}{{alice, bobRelayed}, {bob, aliceRelayed}} {
		if code := c.from.createPermission(c.to.Addr()); code != 0 {
			t.Fatalf("%s: CreatePermission for the other allocation %s: %d", c.from, c.to, code)
		}
	}
	// Send indication one way, ChannelData the other.
	alice.send(bobRelayed, []byte("hello bob"))
	if d, err := bob.receive(); err != nil || string(d.data) != "hello bob" || d.from != aliceRelayed {
		t.Fatalf("bob received %+v, %v; want hello bob from %s", d, err, aliceRelayed)
	}
	if code := bob.channelBind(0x4001, aliceRelayed); code != 0 {
		t.Fatalf("ChannelBind to alice's allocation: %d", code)
	}
	bob.sendChannel(0x4001, []byte("hello alice"))
	if d, err := alice.receive(); err != nil || string(d.data) != "hello alice" || d.from != bobRelayed {
		t.Fatalf("alice received %+v, %v; want hello alice from %s", d, err, bobRelayed)
	}

	// Other ports of the node: a UDP echo server there never hears from
	// the relay, and the packets are counted as refused.
	echo := startEchoPeer(t, nodeIP)
	before := counterValue(t, tr.Relay, "turnpike_relay_peers_denied_total", "reason", denyNode)
	for range 3 {
		alice.send(echo.addr, []byte("to a node port"))
	}
	if code := alice.channelBind(0x4002, echo.addr); code == 0 {
		alice.sendChannel(0x4002, []byte("to a node port"))
	}
	waitFor(t, "node-port packets counted as refused", func() bool {
		return counterValue(t, tr.Relay, "turnpike_relay_peers_denied_total", "reason", denyNode) >= before+4
	})
	// The echo would have come back as a Data indication or ChannelData;
	// what alice can read now must not be it.
	alice.readTimeout = ioTimeout / 20
	if d, err := alice.receive(); err == nil {
		t.Fatalf("alice got %q from %s: a node port outside the relay range was reachable", d.data, d.from)
	}

	// The relay's metrics and health ports, over an RFC 6062 Connect.
	for _, port := range []int{cfg.Internal.MetricsPort, cfg.Internal.HealthPort} {
		c := dialRaw(t, "tcp", addr, testUser, testPassword)
		if code, _ := c.allocate(6, false); code != 0 {
			t.Fatalf("TCP allocation: %d", code)
		}
		if code := c.connect(netip.AddrPortFrom(nodeIP, uint16(port))); code == 0 {
			t.Errorf("Connect to the relay's own port %d succeeded", port)
		}
	}
}

// BenchmarkSameRelayHop measures the hop a same-relay call adds between
// the two allocations, to weigh a short-cut inside the relay against it:
// "kernel" is today's path, one allocation's relay socket sending to the
// other's over the node address (sendto, the kernel's UDP path, the
// receiving goroutine woken by the netpoller, recvfrom), both sockets
// wrapped as the relay wraps them; "in-process" is what a short-cut would
// at best put in its place, the datagram handed to the receiving goroutine
// over a channel. Each op is one 1200-byte datagram sent and received by
// a goroutine that then reports back over a channel (in both, so that cost
// is common).
func BenchmarkSameRelayHop(b *testing.B) {
	payload := make([]byte, 1200)
	b.Run("kernel", func(b *testing.B) {
		open := func() *meteredPacketConn {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			return &meteredPacketConn{PacketConn: c, toPeer: testMeter(0), fromPeer: testMeter(0)}
		}
		from, to := open(), open()
		defer from.Close()
		received := make(chan struct{})
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := to.ReadFrom(buf); err != nil {
					return
				}
				received <- struct{}{}
			}
		}()
		defer to.Close()
		dst := to.LocalAddr()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := from.WriteTo(payload, dst); err != nil {
				b.Fatal(err)
			}
			<-received
		}
	})
	b.Run("in-process", func(b *testing.B) {
		queue, received := make(chan []byte, 64), make(chan struct{})
		go func() {
			buf := make([]byte, 1500)
			for p := range queue {
				copy(buf, p)
				received <- struct{}{}
			}
		}()
		defer close(queue)
		b.ReportAllocs()
		for b.Loop() {
			queue <- payload
			<-received
		}
	})
}
