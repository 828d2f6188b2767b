package relay

import (
	"net"

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

// meteredPacketConn wraps an allocation's UDP relay socket.
type meteredPacketConn struct {
	net.PacketConn
	toPeer, fromPeer *meter
}

// ReadFrom returns the next datagram from a peer that fits the bandwidth
// quota; datagrams over quota are dropped here, as a congested link would.
func (c *meteredPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || c.fromPeer.admit(n) {
			return n, addr, err
		}
	}
}

// WriteTo sends a datagram to a peer, or drops it when over quota. A drop
// reports success: pion would otherwise log an error per dropped packet.
func (c *meteredPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !c.toPeer.admit(len(p)) {
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
}

func (l *meteredListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	to, from := l.newMeters()
	return &meteredConn{Conn: c, toPeer: to, fromPeer: from}, nil
}
