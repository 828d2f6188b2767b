package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/pion/turn/v5"
)

// errTCPRelayDisabled refuses RFC 6062 allocations unless tcpRelay is set.
var errTCPRelayDisabled = errors.New("TCP relaying (RFC 6062) is disabled: set tcpRelay")

// relayAddressGenerator opens the relay sockets of new allocations. It binds
// a random free port of relayPortRange on the bind address of the requested
// family and reports the advertised (external) address with that port as the
// XOR-RELAYED-ADDRESS. It reads addresses and quotas from the current config
// on every call, so a reload applies to the next allocation.
type relayAddressGenerator struct {
	r *Relay
}

var _ turn.RelayAddressGenerator = (*relayAddressGenerator)(nil)

func (g *relayAddressGenerator) Validate() error { return nil }

// errNodePort refuses a Connect to a port of the node peers may not use.
var errNodePort = errors.New("a port of the relay's own node outside the relay port range")

// nodePorts is the per-packet node port check of new relay sockets.
func (r *Relay) nodePorts() nodePorts {
	return nodePorts{
		policy: func() *peerPolicy { return r.current().policy },
		denied: r.metrics.peersDenied.WithLabelValues(denyNode).Inc,
	}
}

// portAttempts is how many random ports to try before giving up (508).
const portAttempts = 64

func (g *relayAddressGenerator) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	st := g.r.current()
	bind, advertised, err := st.addrs.forNetwork(c.Network)
	if err != nil {
		return nil, nil, err
	}
	for range portAttempts {
		port := g.pickPort(c.RequestedPort)
		conn, err := net.ListenUDP(c.Network, &net.UDPAddr{IP: bind.AsSlice(), Port: port})
		if err != nil {
			if c.RequestedPort != 0 {
				return nil, nil, err
			}
			continue
		}
		toPeer, fromPeer := g.r.newMeters("udp", st.quotas.BandwidthPerAllocation)
		metered := &meteredPacketConn{PacketConn: conn, toPeer: toPeer, fromPeer: fromPeer, node: g.r.nodePorts()}
		return metered, &net.UDPAddr{IP: advertised.AsSlice(), Port: port}, nil
	}
	return nil, nil, fmt.Errorf("no free UDP relay port in %d-%d", g.r.cfg.RelayPortRange.Min, g.r.cfg.RelayPortRange.Max)
}

func (g *relayAddressGenerator) AllocateListener(c turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	if !g.r.cfg.TCPRelay {
		return nil, nil, errTCPRelayDisabled
	}
	st := g.r.current()
	bind, advertised, err := st.addrs.forNetwork(c.Network)
	if err != nil {
		return nil, nil, err
	}
	// SO_REUSEPORT lets the outgoing peer connections of Connect bind the
	// same relayed port while this listener holds it (RFC 6062 section 5.2).
	lc := net.ListenConfig{Control: reusePort}
	for range portAttempts {
		port := g.pickPort(c.RequestedPort)
		ln, err := lc.Listen(context.Background(), c.Network, netip.AddrPortFrom(bind, uint16(port)).String())
		if err != nil {
			if c.RequestedPort != 0 {
				return nil, nil, err
			}
			continue
		}
		meters := g.r.allocationMeters("tcp", st.quotas.BandwidthPerAllocation)
		return &meteredListener{Listener: ln, newMeters: meters, node: g.r.nodePorts()}, &net.TCPAddr{IP: advertised.AsSlice(), Port: port}, nil
	}
	return nil, nil, fmt.Errorf("no free TCP relay port in %d-%d", g.r.cfg.RelayPortRange.Min, g.r.cfg.RelayPortRange.Max)
}

// AllocateConn dials a peer for a Connect request, from the relayed port.
// pion passes the advertised relayed address; the socket binds the local
// bind address with that port instead.
func (g *relayAddressGenerator) AllocateConn(c turn.AllocateConnConfig) (net.Conn, error) {
	if !g.r.cfg.TCPRelay {
		return nil, errTCPRelayDisabled
	}
	st := g.r.current()
	bind, _, err := st.addrs.forNetwork(c.Network)
	if err != nil {
		return nil, err
	}
	local, ok := c.LocalAddr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("relayed address %v is not TCP", c.LocalAddr)
	}
	if g.r.nodePorts().refuses(c.RemoteAddr) {
		return nil, fmt.Errorf("peer %v: %w", c.RemoteAddr, errNodePort)
	}
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: bind.AsSlice(), Port: local.Port},
		Control:   reusePort,
		Timeout:   30 * time.Second, // RFC 6062: at least 30 s before 447
	}
	conn, err := d.Dial(c.Network, c.RemoteAddr.String())
	if err != nil {
		return nil, err
	}
	to, from := g.r.newMeters("tcp", st.quotas.BandwidthPerAllocation)
	return &meteredConn{Conn: conn, toPeer: to, fromPeer: from}, nil
}

// pickPort returns the requested port, or a random one of relayPortRange.
func (g *relayAddressGenerator) pickPort(requested int) int {
	if requested != 0 {
		return requested
	}
	pr := g.r.cfg.RelayPortRange
	return pr.Min + rand.IntN(pr.Max-pr.Min+1)
}
