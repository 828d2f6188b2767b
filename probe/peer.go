package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

var errNoLocalAddress = errors.New("no non-loopback address on this machine")

// echoPeer returns the peer to ping: the given address, or the relayed
// address of a second allocation on the same server, which sends every
// datagram back. The second allocation permits the first one's relayed
// address, as the other side of a call would.
func echoPeer(ctx context.Context, o Options, first *allocation) (net.Addr, func(), error) {
	if o.Peer != "" {
		addr, err := net.ResolveUDPAddr("udp", o.Peer)
		if err != nil {
			return nil, nil, &Error{Kind: KindOther, Step: "peer", Err: err}
		}
		return addr, func() {}, nil
	}
	second, err := allocateOn(ctx, o, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := second.client.CreatePermission(first.relayConn.LocalAddr()); err != nil {
		second.close()
		return nil, nil, classify("permission", o.Server, fmt.Errorf("peer %s (the first allocation): %w", first.relayConn.LocalAddr(), err))
	}
	go echo(second.relayConn)
	return second.relayConn.LocalAddr(), second.close, nil
}

// echo sends every datagram back to where it came from, until conn is closed.
func echo(conn net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := conn.ReadFrom(buf)
		var ne net.Error
		switch {
		case err == nil:
			_, _ = conn.WriteTo(buf[:n], from)
		case errors.As(err, &ne) && ne.Timeout():
		default:
			return // closed
		}
	}
}

// LocalPeerAddress is the first global unicast address of this machine in
// the family asked for (for callers that run a peer on this machine).
func LocalPeerAddress(ipv6 bool) (netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr()
		if ip.IsGlobalUnicast() && ip.Is6() == ipv6 && !ip.Is4In6() {
			return ip, nil
		}
	}
	return netip.Addr{}, errNoLocalAddress
}
