package adversarial

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// Peers a client must not reach through the relay (issue items 5 and 6),
// and the one node address it may: another allocation of the same relay
// (issue 14).

// quietFor is how long a test waits to see that nothing arrives: the time a
// relayed datagram takes here is far below it.
const quietFor = time.Second

// nothingArrives reports whether conn receives nothing for quietFor.
func nothingArrives(t *testing.T, conn net.PacketConn) bool {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(quietFor))
	n, from, err := conn.ReadFrom(make([]byte, 1500))
	if err == nil {
		t.Logf("%d bytes arrived from %s", n, from)
	}
	return err != nil
}

// listenTCP opens a TCP listener inside ns and reports, through the
// returned function, whether anything connected to it.
func listenTCP(t *testing.T, l *lab, addr string) (accepted func() bool) {
	t.Helper()
	var ln net.Listener
	if err := l.node.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			got <- struct{}{}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return func() bool {
		select {
		case <-got:
			return true
		case <-time.After(quietFor):
			return false
		}
	}
}

// TestSecondNodeAddressUnreachable puts a UDP and a TCP listener on the
// node's second address, which the relay neither binds nor advertises and
// HOST_IP does not name. The relay used to let a client reach both:
// CreatePermission, ChannelBind, Send, and a whole RFC 6062 TCP session.
//
// A node address may be granted a permission (permissions carry no port,
// and another allocation of this relay lives on a node address), but
// nothing may reach a port outside the relay port range: a ChannelBind
// names the port and is refused, and Send, ChannelData and Connect are
// checked per packet and per connection.
func TestSecondNodeAddressUnreachable(t *testing.T) {
	l := newLab(t, nil)
	udpTarget := l.node.ListenPacket("udp4", nodeAddr2+":7000")
	tcpAccepted := listenTCP(t, l, nodeAddr2+":7001")
	udpPeer := netip.MustParseAddrPort(nodeAddr2 + ":7000")
	tcpPeer := netip.MustParseAddrPort(nodeAddr2 + ":7001")
	const denied = `turnpike_relay_peers_denied_total{reason="node"}`

	c := l.dial("udp", false)
	c.allocate(false)
	c.createPermission(udpPeer)
	bound := c.channelBind(channelBindType, 0x4000, udpPeer)
	if bound != int(stun.CodeForbidden) {
		t.Errorf("ChannelBind to %s: %d, want 403", udpPeer, bound)
	}
	c.send(udpPeer, []byte("through the relay"))
	if bound == 0 {
		c.sendChannel(0x4000, []byte("through a channel"))
	}
	if !nothingArrives(t, udpTarget) {
		t.Errorf("data reached %s", udpPeer)
	}

	ctl := l.dial("tcp", false)
	ctl.allocate(true)
	if got := ctl.connect(tcpPeer); got == 0 {
		t.Errorf("Connect to %s succeeded", tcpPeer)
	}
	if tcpAccepted() {
		t.Errorf("the relay connected to %s", tcpPeer)
	}
	if got := l.relay.metric(t, denied); got < 2 {
		t.Errorf("%s = %v, want at least 2 (the Send and the Connect)", denied, got)
	}
}

// teredo is the Teredo address (RFC 4380) of client: its IPv4 address is
// the last 32 bits, inverted.
func teredo(client netip.Addr) netip.Addr {
	b := netip.MustParseAddr("2001:0:4136:e378:8000:63bf::").As16()
	for i, x := range client.As4() {
		b[12+i] = ^x
	}
	return netip.AddrFrom16(b)
}

// TestEmbeddedAndReservedPeersRefused asks for peers that are refused
// ranges in disguise (IPv4 embedded in IPv6 forms the relay did not fold)
// or special-purpose ranges it did not know. Each must be refused with
// 403, and a Send to it must not reach the wire: the node's default route
// leads to the dead end, which counts every packet.
func TestEmbeddedAndReservedPeersRefused(t *testing.T) {
	l := newLab(t, nil)
	private := netip.MustParseAddr("10.0.0.1")
	peers := map[bool][]netip.Addr{ // by whether the allocation is IPv6
		false: {
			netip.MustParseAddr("192.0.0.8"), // IETF protocol assignments
			netip.MustParseAddr("240.0.0.1"), // reserved
		},
		true: {
			netip.MustParseAddr("64:ff9b:1::a00:1"), // local-use NAT64 (RFC 8215)
			netip.MustParseAddr("::ffff:0:a00:1"),   // IPv4-translated (RFC 2765)
			teredo(private),                         // Teredo (RFC 4380)
			netip.MustParseAddr("fec0::1"),          // site-local (deprecated, RFC 3879)
		},
	}
	for _, v6 := range []bool{false, true} {
		c := l.dial("udp", v6)
		c.allocate(false)
		for _, peer := range peers[v6] {
			ap := netip.AddrPortFrom(peer, 9)
			if got := c.createPermission(ap); got != int(stun.CodeForbidden) {
				t.Errorf("CreatePermission for %s: %d, want 403", peer, got)
			}
			c.send(ap, []byte("to the wire?"))
		}
	}
	time.Sleep(quietFor) // what was sent has arrived by now, if anything was
	if n := l.wirePackets(); n > 0 {
		t.Errorf("%d packets reached the wire beyond the node", n)
		t.Logf("%s%s", l.dead.Exec("iptables", "-t", "raw", "-nvxL", "PREROUTING"), l.dead.Exec("ip6tables", "-t", "raw", "-nvxL", "PREROUTING"))
	}
}

// TestMalformedPeerAddressesRefused: an IPv6-family XOR-PEER-ADDRESS with 4
// address bytes, two XOR-PEER-ADDRESS of which one is refused (the relay
// used to answer 403 yet install the other), and port 0. Each case gets an
// allocation of its own; none may be granted, nor install a permission for
// the peer, whose datagram would then reach the client. Once a real
// permission exists, the same datagram does arrive.
func TestMalformedPeerAddressesRefused(t *testing.T) {
	l := newLab(t, nil)
	peer := l.pub.ListenPacket("udp4", peerAddr+":0")
	peerAP := netip.MustParseAddrPort(peer.LocalAddr().String())
	reaches := func(c *client, relayed netip.AddrPort) bool {
		if _, err := peer.WriteTo([]byte("let me in"), net.UDPAddrFromAddrPort(relayed)); err != nil {
			t.Fatal(err)
		}
		_, err := c.receive(quietFor)
		return err == nil
	}
	for _, tc := range []struct {
		name string
		v6   bool // an IPv6 allocation, where pion would take the 4 bytes for an IPv6 address
		ask  func(c *client) int
	}{
		{"an IPv6 XOR-PEER-ADDRESS of 4 bytes", true, func(c *client) int {
			short := rawPeer{family: 2, port: peerAP.Port(), addr: peerAP.Addr().AsSlice()}
			return code(c.request(typeOf(stun.MethodCreatePermission, stun.ClassRequest), short))
		}},
		{"a public and a private peer in one CreatePermission", false, func(c *client) int {
			return c.createPermission(peerAP, netip.MustParseAddrPort("10.0.0.1:9"))
		}},
		{"ChannelBind to port 0", false, func(c *client) int {
			return c.channelBind(channelBindType, 0x4001, netip.AddrPortFrom(peerAP.Addr(), 0))
		}},
	} {
		c := l.dial("udp", tc.v6)
		relayed := c.allocate(false)
		if got := tc.ask(c); got == 0 {
			t.Errorf("%s: granted", tc.name)
		}
		if !tc.v6 && reaches(c, relayed) {
			t.Errorf("%s: installed a permission for the peer", tc.name)
		}
	}

	c := l.dial("udp", false)
	relayed := c.allocate(false)
	if got := c.createPermission(peerAP); got != 0 {
		t.Fatalf("CreatePermission for %s: %d", peerAP, got)
	}
	if !reaches(c, relayed) {
		t.Error("with a permission, nothing from the peer reached the client")
	}
}

// TestSameRelayPeers: a peer on the node's address is another allocation
// of this relay when its port lies in the relay port range, and must be
// reachable; every other port of the node (the metrics and health ports,
// any other service) must not be, by UDP (dropped per packet) or by TCP
// (Connect refused).
func TestSameRelayPeers(t *testing.T) {
	l := newLab(t, nil)
	a, b := l.dial("udp", false), l.dial("udp", false)
	aRelayed, bRelayed := a.allocate(false), b.allocate(false)
	if got := a.createPermission(bRelayed); got != 0 {
		t.Errorf("CreatePermission for another allocation %s: %d", bRelayed, got)
	}
	if got := b.createPermission(aRelayed); got != 0 {
		t.Errorf("CreatePermission for another allocation %s: %d", aRelayed, got)
	}
	a.send(bRelayed, []byte("hello, neighbour"))
	if d, err := b.receive(5 * time.Second); err != nil || string(d) != "hello, neighbour" {
		t.Errorf("allocation %s did not receive from %s: %q %v", bRelayed, aRelayed, d, err)
	}

	const denied = `turnpike_relay_peers_denied_total{reason="node"}`
	before := l.relay.metric(t, denied)
	other := l.node.ListenPacket("udp4", nodeAddr+":7002")
	a.send(netip.MustParseAddrPort(nodeAddr+":7002"), []byte("to a node service"))
	if !nothingArrives(t, other) {
		t.Error("a Send reached a UDP service of the node outside the relay port range")
	}
	if got := l.relay.metric(t, denied) - before; got < 1 {
		t.Errorf("%s went up by %v for a Send to a node port, want at least 1", denied, got)
	}

	ctl := l.dial("tcp", false)
	ctl.allocate(true)
	for _, port := range []int{metricsPort, healthPort, turnPort} {
		peer := netip.MustParseAddrPort(fmt.Sprintf("%s:%d", nodeAddr, port))
		if got := ctl.connect(peer); got == 0 {
			t.Errorf("Connect to the node's %s succeeded", peer)
		}
	}
}
