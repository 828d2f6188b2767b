package relay

import (
	"net"
	"net/netip"

	"golang.org/x/time/rate"
)

// Relay-side sockets (the ones allocations send to and receive from peers)
// are wrapped to count traffic and to enforce the bandwidth quota. This is
// the per-packet path: it must not allocate or look anything up, so the
// counters and the limiter are resolved once when the allocation is made.

// meter counts one direction of relayed traffic and limits its rate.
type meter struct {
	counters trafficCounters
	limiter  *rate.Limiter // nil: unlimited
	dropped  func()        // counts a packet dropped by the limiter
}

// admit counts a packet of n bytes, or reports that the bandwidth quota
// says to drop it.
func (m *meter) admit(n int) bool {
	if m.limiter != nil && !m.limiter.AllowN(timeNow(), n) {
		m.dropped()
		return false
	}
	m.counters.packets.Inc()
	m.counters.bytes.Add(float64(n))
	return true
}

// nodePorts keeps relayed traffic off the node's own ports: a permission
// for a node address (which carries no port) admits only its relay ports,
// the other allocations of this relay (peerPolicy.relayPortOnly).
type nodePorts struct {
	policy func() *peerPolicy // the policy in force; nil: no check
	denied func()             // counts a refused packet or connection
}

// refuses reports whether addr is a node address on a port peers may not
// use, and counts it.
func (n nodePorts) refuses(addr net.Addr) bool {
	if n.policy == nil {
		return false
	}
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		return false
	}
	if n.policy().relayPortOnly(ap) {
		n.denied()
		return true
	}
	return false
}

// meteredPacketConn wraps an allocation's UDP relay socket.
type meteredPacketConn struct {
	net.PacketConn
	toPeer, fromPeer *meter
	node             nodePorts
}

// ReadFrom returns the next datagram from a peer that fits the bandwidth
// quota; datagrams over quota are dropped here, as a congested link would,
// and so are datagrams from a port of the node peers may not use.
func (c *meteredPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if !c.node.refuses(addr) && c.fromPeer.admit(n) {
			return n, addr, nil
		}
	}
}

// WriteTo sends a datagram to a peer, or drops it when over quota or to a
// port of the node peers may not use. A drop reports success: pion would
// otherwise log an error per dropped packet.
func (c *meteredPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.node.refuses(addr) || !c.toPeer.admit(len(p)) {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// meteredConn wraps one RFC 6062 peer data connection. TCP cannot drop
// bytes, so over quota it waits (backpressure) instead.
type meteredConn struct {
	net.Conn
	toPeer, fromPeer *meter
}

func (c *meteredConn) Read(p []byte) (int, error) {
	p = c.fromPeer.clamp(p)
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.fromPeer.wait(n)
	}
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := c.toPeer.clamp(p)
		c.toPeer.wait(len(chunk))
		n, err := c.Conn.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// clamp shortens p to what the limiter can ever grant at once.
func (m *meter) clamp(p []byte) []byte {
	if m.limiter != nil && len(p) > m.limiter.Burst() {
		return p[:m.limiter.Burst()]
	}
	return p
}

// wait counts n bytes and blocks until the bandwidth quota allows them.
func (m *meter) wait(n int) {
	if m.limiter != nil {
		if r := m.limiter.ReserveN(timeNow(), n); r.OK() {
			sleep(r.Delay())
		}
	}
	m.counters.packets.Inc()
	m.counters.bytes.Add(float64(n))
}

// meteredListener wraps an allocation's RFC 6062 relay listener, so peer
// connections it accepts are metered too.
type meteredListener struct {
	net.Listener
	newMeters func() (toPeer, fromPeer *meter)
	node      nodePorts
}

// Accept returns the next peer connection; one from a port of the node
// peers may not use is closed at once.
func (l *meteredListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.node.refuses(c.RemoteAddr()) {
			_ = c.Close()
			continue
		}
		to, from := l.newMeters()
		return &meteredConn{Conn: c, toPeer: to, fromPeer: from}, nil
	}
}
