package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
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
//
// Each UDP listener socket and each stream listener has its own generator,
// as it has its own pion allocation table: the gate tells the generator of
// the socket an Allocate arrived on which reserved socket it redeems
// (claim). A UDP socket's requests are handled one at a time by one pion
// read loop, so the claim is taken by the request that made it.
type relayAddressGenerator struct {
	r *Relay

	mu     sync.Mutex
	claims map[claimKey]string // RESERVATION-TOKEN being redeemed
}

// claimKey names the Allocate a claim is for, as pion calls the generator:
// by user and network.
type claimKey struct{ user, network string }

func newAddressGenerator(r *Relay) *relayAddressGenerator {
	return &relayAddressGenerator{r: r, claims: map[claimKey]string{}}
}

// claim makes the next relay socket user's Allocate asks for on network
// the one reserved under token.
func (g *relayAddressGenerator) claim(user, network, token string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.claims[claimKey{user, network}] = token
}

// dropClaims forgets user's claims: they were for Allocates pion refused
// before asking for a socket (a quota, say).
func (g *relayAddressGenerator) dropClaims(user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.claims {
		if k.user == user {
			delete(g.claims, k)
		}
	}
}

// claimed takes the reserved socket claimed for user's Allocate on network.
func (g *relayAddressGenerator) claimed(user, network string) (*heldPort, bool) {
	g.mu.Lock()
	token, ok := g.claims[claimKey{user, network}]
	delete(g.claims, claimKey{user, network})
	g.mu.Unlock()
	if !ok {
		return nil, false
	}
	return g.r.reservations.take(token)
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

// AllocatePacketConn opens the relay socket of a UDP allocation. pion asks
// for an even port (RequestedPort) when the Allocate carries EVEN-PORT,
// and probes for one without a user first; the generator then binds a
// free even port and holds the next one for the reservation.
func (g *relayAddressGenerator) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	st := g.r.current()
	bind, advertised, err := st.addrs.forNetwork(c.Network)
	if err != nil && c.UserID == "" && c.Network == "udp4" {
		// pion's probe for an even port, before an EVEN-PORT allocation, is
		// IPv4 whatever the allocation's family; the generator picks the
		// pair itself when pion then asks, so an IPv6 port answers it too.
		c.Network = "udp6"
		bind, advertised, err = st.addrs.forNetwork(c.Network)
	}
	if err != nil {
		return nil, nil, err
	}
	evenPair := c.UserID != "" && c.RequestedPort != 0 && c.RequestedPort%2 == 0
	switch {
	case c.UserID != "" && c.RequestedPort == 0:
		if h, ok := g.claimed(c.UserID, c.Network); ok {
			return g.relaySocket(h.conn, advertised, st)
		}
	case evenPair:
		c.RequestedPort = 0 // any free pair; pion reserves the port it is handed
	}
	for range portAttempts {
		port := g.pickPort(c.RequestedPort)
		if evenPair {
			port &^= 1
		}
		conn, err := net.ListenUDP(c.Network, &net.UDPAddr{IP: bind.AsSlice(), Port: port})
		if err != nil {
			if c.RequestedPort != 0 {
				return nil, nil, err
			}
			continue
		}
		if evenPair && !g.holdNext(c.Network, bind, port) {
			_ = conn.Close()
			continue
		}
		return g.relaySocket(conn, advertised, st)
	}
	return nil, nil, fmt.Errorf("no free UDP relay port in %d-%d", g.r.cfg.RelayPortRange.Min, g.r.cfg.RelayPortRange.Max)
}

// holdNext binds port+1 and holds it for the reservation of the
// allocation at the even port.
func (g *relayAddressGenerator) holdNext(network string, bind netip.Addr, port int) bool {
	pr := g.r.cfg.RelayPortRange
	if port < pr.Min || port+1 > pr.Max {
		return false
	}
	next, err := net.ListenUDP(network, &net.UDPAddr{IP: bind.AsSlice(), Port: port + 1})
	if err != nil {
		return false
	}
	g.r.reservations.holdNext(network, port, next)
	return true
}

// relaySocket wraps conn as an allocation's relay socket: metered, kept off
// the node's own ports, and reported at the advertised address.
func (g *relayAddressGenerator) relaySocket(conn *net.UDPConn, advertised netip.Addr, st *state) (net.PacketConn, net.Addr, error) {
	toPeer, fromPeer := g.r.newMeters("udp", st.quotas.BandwidthPerAllocation)
	metered := &meteredPacketConn{PacketConn: conn, toPeer: toPeer, fromPeer: fromPeer, node: g.r.nodePorts()}
	return metered, &net.UDPAddr{IP: advertised.AsSlice(), Port: conn.LocalAddr().(*net.UDPAddr).Port}, nil
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
