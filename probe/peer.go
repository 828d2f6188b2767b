package probe

import (
	"errors"
	"net"
	"net/netip"
)

var errNoLocalAddress = errors.New("no non-loopback address on this machine for the echo peer: pass --peer HOST:PORT of a UDP echo service")

// echoPeer returns the peer to ping: the given address, or a UDP echo socket
// opened on this machine. TURN servers refuse loopback peers, so the local
// peer binds a non-loopback address of the same IP family as the relayed
// address; the server must allow that address (see LocalPeerAddress).
func echoPeer(given string, relayed net.Addr) (net.Addr, func(), error) {
	if given != "" {
		addr, err := net.ResolveUDPAddr("udp", given)
		return addr, func() {}, err
	}
	ip, err := LocalPeerAddress(relayedIs6(relayed))
	if err != nil {
		return nil, nil, err
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, nil, err
	}
	go echo(conn)
	return conn.LocalAddr(), func() { conn.Close() }, nil
}

// echo sends every datagram back to where it came from, until conn is closed.
func echo(conn *net.UDPConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}
}

// LocalPeerAddress is the address the local echo peer binds: the first
// global unicast address of this machine in the family asked for. A probe
// against a relay on this machine needs it allow-listed (for turnpike:
// spec.peerPolicy.allow: [<address>/32]), because relays refuse their own
// node's addresses and private ranges by default.
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

func relayedIs6(a net.Addr) bool {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.IP.To4() == nil
	}
	return false
}
