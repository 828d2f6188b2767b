// Package fastpath is the kernel half of the relay's opt-in UDP fast path: a
// TC ingress program (turnrelay.c) that relays ChannelData between a client
// and a peer once the relay has bound the channel, so those datagrams never
// reach userspace.
//
// The relay decides what the kernel may relay: it writes a Channel only
// after pion/turn has authenticated the client and the peer policy and the
// quotas have admitted the peer, and it removes the Channel when pion says
// the channel, its permission or the allocation is gone. Each entry also
// carries its own expiry, so a missed event cannot keep a channel relaying
// past its lifetime. Whatever the program does not handle (TCP, Send/Data
// indications, padding, fragments, IPv6 extension headers, GSO, a
// destination it cannot route) passes on untouched to the userspace relay.
package fastpath

import (
	"net"
	"net/netip"
	"time"
)

// Channel is one bound channel as the kernel relays it.
type Channel struct {
	// Client is the client's address; Listener is the relay listener it
	// sends to (address unspecified when the listener binds all addresses).
	Client, Listener netip.AddrPort
	Number           uint16
	// Peer is the channel's peer; Relay is the allocation's relay socket
	// (address unspecified when it binds all addresses).
	Peer, Relay netip.AddrPort
	// ClientLocal and PeerLocal say whether that end is an address of this
	// host: local ends are delivered locally, remote ones forwarded.
	ClientLocal, PeerLocal bool
	// ChannelExpires and PermissionExpires end the two directions:
	// client-to-peer lives as long as the channel binding, peer-to-client
	// as long as the permission.
	ChannelExpires, PermissionExpires time.Time
	// BytesPerSecond is the allocation's bandwidth quota per direction;
	// 0 is unlimited.
	BytesPerSecond int64
	// LocalPeerPorts are the ports a peer on this host (PeerLocal) may be
	// relayed to: the TurnServer's relay port range, or every port when
	// the peer policy allows that address exactly. The kernel checks it
	// too, so that no other port of the node is reached through it. The
	// zero value opens none: a local peer then stays in userspace.
	LocalPeerPorts PortRange
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	Min, Max uint16
}

// AllPorts is every port.
var AllPorts = PortRange{Min: 0, Max: 65535}

// Contains says whether port lies in r.
func (r PortRange) Contains(port uint16) bool {
	return port >= r.Min && port <= r.Max
}

// Offloadable says whether the kernel program handles c: every address of
// one family (IPv4 or IPv6; the program does not translate between them),
// a ChannelData channel number, and a local peer only on LocalPeerPorts.
func (c Channel) Offloadable() bool {
	is4 := c.Client.Addr().Unmap().Is4()
	for _, a := range []netip.AddrPort{c.Peer, c.Relay, c.Listener} {
		if !a.Addr().IsValid() || a.Addr().Unmap().Is4() != is4 {
			return false
		}
	}
	if c.PeerLocal && !c.LocalPeerPorts.Contains(c.Peer.Port()) {
		return false
	}
	return c.Client.Addr().IsValid() && c.Number >= 0x4000 && c.Number <= 0x4fff
}

// Attachable says whether the program can work on iface: it parses an
// Ethernet header, which loopback has too. (Tunnels such as WireGuard have
// none, and no hardware address.)
func Attachable(iface net.Interface) bool {
	return iface.Flags&net.FlagLoopback != 0 || len(iface.HardwareAddr) == 6
}

// Stat is a packet and byte count (bytes: application data, as the
// userspace relay counts them).
type Stat struct {
	Packets, Bytes uint64
}

// Counters are the program's totals since it was loaded.
type Counters struct {
	ToPeer, FromPeer               Stat // relayed
	DroppedToPeer, DroppedFromPeer Stat // over the bandwidth quota
}

// Sub returns c - o, counter by counter.
func (c Counters) Sub(o Counters) Counters {
	sub := func(a, b Stat) Stat { return Stat{a.Packets - b.Packets, a.Bytes - b.Bytes} }
	return Counters{
		ToPeer:          sub(c.ToPeer, o.ToPeer),
		FromPeer:        sub(c.FromPeer, o.FromPeer),
		DroppedToPeer:   sub(c.DroppedToPeer, o.DroppedToPeer),
		DroppedFromPeer: sub(c.DroppedFromPeer, o.DroppedFromPeer),
	}
}

// maxRate is the largest bandwidth quota the program enforces (bytes/s);
// the token arithmetic stays in 64 bits below it. Higher quotas are
// unlimited in the kernel.
const maxRate = 1_000_000_000

// burstFor is the bucket size of a quota: a tenth of a second, at least
// 64 KiB, like the userspace relay's limiter.
func burstFor(bytesPerSecond int64) uint64 {
	return uint64(max(bytesPerSecond/10, 64*1024))
}
