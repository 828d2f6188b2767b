package relay

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/fastpath"
)

// Peer policy: which peer addresses a client may reach through the relay.
//
// A TURN relay is an open proxy into whatever network it sits in, so the
// default must be "public internet only". The check runs in four steps:
//
//  1. Canonicalise: IPv6 spellings that embed an IPv4 address (mapped,
//     translated, compatible, NAT64, 6to4, Teredo) are folded to that IPv4
//     address. Without this, ::ffff:127.0.0.1 or 64:ff9b::7f00:1 would slip
//     past an IPv4 rule (coturn CVE-2026-27624 and issue #1945 were exactly
//     such bypasses).
//  2. Hard deny: addresses no configuration may open (loopback, link-local
//     including cloud metadata at 169.254.169.254, unspecified, multicast,
//     broadcast).
//  3. Default deny, unless allow-listed: the IANA special-purpose blocks
//     that are not globally reachable (specialPurpose), private ranges,
//     shared address space, unique-local IPv6 and the cluster's CIDRs.
//     peerPolicy.deny is checked before allow and always wins.
//  4. The node's own addresses (every address on its interfaces): only on
//     a port of the relay port range, where the peer is another allocation
//     of this relay (the usual call when both WebRTC peers use the same
//     relay). Permissions carry no port, so CreatePermission admits them
//     and every packet to or from them is checked (checkPort). Only an
//     allow entry naming the address itself (/32, /128) opens its other
//     ports: a broad allow such as 0.0.0.0/0 must not open the node.

// Reasons a peer is refused; they are the "reason" label of
// turnpike_relay_peers_denied_total.
const (
	denyUnspecified    = "unspecified"
	denyLoopback       = "loopback"
	denyLinkLocal      = "link_local"
	denyMulticast      = "multicast"
	denyBroadcast      = "broadcast"
	denyPrivate        = "private"
	denySpecialPurpose = "special_purpose"
	denyCluster        = "cluster"
	denyNode           = "node"
	denyDenyList       = "deny_list"
	denyInvalid        = "invalid"
)

// peerDenyReasons lists every reason, so metrics can be pre-initialised.
var peerDenyReasons = []string{
	denyUnspecified, denyLoopback, denyLinkLocal, denyMulticast, denyBroadcast,
	denyPrivate, denySpecialPurpose, denyCluster, denyNode, denyDenyList, denyInvalid,
}

var (
	// Ranges whose IPv6 form carries an IPv4 address (see canonicalPeer).
	prefixMapped     = netip.MustParsePrefix("::ffff:0:0/96")   // RFC 4291
	prefixTranslated = netip.MustParsePrefix("::ffff:0:0:0/96") // RFC 2765 (SIIT)
	prefixV4Compat   = netip.MustParsePrefix("::/96")           // RFC 4291, deprecated
	prefixNAT64      = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052
	prefix6to4       = netip.MustParsePrefix("2002::/16")       // RFC 3056
	prefixTeredo     = netip.MustParsePrefix("2001::/32")       // RFC 4380

	hardDenyRanges = []struct {
		prefix netip.Prefix
		reason string
	}{
		{netip.MustParsePrefix("0.0.0.0/8"), denyUnspecified},
		{netip.MustParsePrefix("::/128"), denyUnspecified},
		{netip.MustParsePrefix("127.0.0.0/8"), denyLoopback},
		{netip.MustParsePrefix("::1/128"), denyLoopback},
		{netip.MustParsePrefix("169.254.0.0/16"), denyLinkLocal},
		{netip.MustParsePrefix("fe80::/10"), denyLinkLocal},
		{netip.MustParsePrefix("224.0.0.0/4"), denyMulticast},
		{netip.MustParsePrefix("ff00::/8"), denyMulticast},
		{netip.MustParsePrefix("255.255.255.255/32"), denyBroadcast},
	}

	defaultDenyRanges = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("fc00::/7"),
	}
)

// specialPurpose is the IANA IPv4 and IPv6 Special-Purpose Address
// Registries (as of 2025), every row with its "Globally Reachable" column,
// less the rows the sets above already cover (private, shared, loopback,
// link-local, unspecified, multicast, unique-local) and the embeddings
// canonicalPeer folds (mapped, translated, NAT64, 6to4, Teredo). A peer is
// judged by the most specific row that contains it, so a globally
// reachable row inside a larger one that is not (192.0.0.9/32 in
// 192.0.0.0/24) is admitted. Rows that are not globally reachable, or are
// deprecated, are refused unless allow-listed.
var specialPurpose = []struct {
	prefix netip.Prefix
	global bool
	name   string
}{
	{netip.MustParsePrefix("192.0.0.0/24"), false, "IETF Protocol Assignments"},
	{netip.MustParsePrefix("192.0.0.0/29"), false, "IPv4 Service Continuity Prefix"},
	{netip.MustParsePrefix("192.0.0.8/32"), false, "IPv4 dummy address"},
	{netip.MustParsePrefix("192.0.0.9/32"), true, "Port Control Protocol Anycast"},
	{netip.MustParsePrefix("192.0.0.10/32"), true, "Traversal Using Relays around NAT Anycast"},
	{netip.MustParsePrefix("192.0.0.170/32"), false, "NAT64/DNS64 Discovery"},
	{netip.MustParsePrefix("192.0.0.171/32"), false, "NAT64/DNS64 Discovery"},
	{netip.MustParsePrefix("192.0.2.0/24"), false, "Documentation (TEST-NET-1)"},
	{netip.MustParsePrefix("192.31.196.0/24"), true, "AS112-v4"},
	{netip.MustParsePrefix("192.52.193.0/24"), true, "AMT"},
	{netip.MustParsePrefix("192.88.99.0/24"), false, "Deprecated (6to4 Relay Anycast)"},
	{netip.MustParsePrefix("192.175.48.0/24"), true, "Direct Delegation AS112 Service"},
	{netip.MustParsePrefix("198.18.0.0/15"), false, "Benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), false, "Documentation (TEST-NET-2)"},
	{netip.MustParsePrefix("203.0.113.0/24"), false, "Documentation (TEST-NET-3)"},
	{netip.MustParsePrefix("240.0.0.0/4"), false, "Reserved"},

	{netip.MustParsePrefix("64:ff9b:1::/48"), false, "IPv4-IPv6 Translat. (local use)"},
	{netip.MustParsePrefix("100::/64"), false, "Discard-Only Address Block"},
	{netip.MustParsePrefix("100:0:0:1::/64"), false, "Dummy IPv6 Prefix"},
	{netip.MustParsePrefix("2001::/23"), false, "IETF Protocol Assignments"},
	{netip.MustParsePrefix("2001:1::1/128"), true, "Port Control Protocol Anycast"},
	{netip.MustParsePrefix("2001:1::2/128"), true, "Traversal Using Relays around NAT Anycast"},
	{netip.MustParsePrefix("2001:1::3/128"), true, "DNS-SD Service Registration Protocol Anycast"},
	{netip.MustParsePrefix("2001:2::/48"), false, "Benchmarking"},
	{netip.MustParsePrefix("2001:3::/32"), true, "AMT"},
	{netip.MustParsePrefix("2001:4:112::/48"), true, "AS112-v6"},
	{netip.MustParsePrefix("2001:10::/28"), false, "Deprecated (previously ORCHID)"},
	{netip.MustParsePrefix("2001:20::/28"), true, "ORCHIDv2"},
	{netip.MustParsePrefix("2001:30::/28"), true, "Drone Remote ID Protocol Entity Tags (DETs) Prefix"},
	{netip.MustParsePrefix("2001:db8::/32"), false, "Documentation"},
	{netip.MustParsePrefix("2620:4f:8000::/48"), true, "Direct Delegation AS112 Service"},
	{netip.MustParsePrefix("3fff::/20"), false, "Documentation"},
	{netip.MustParsePrefix("5f00::/16"), false, "Segment Routing (SRv6) SIDs"},
	{netip.MustParsePrefix("fec0::/10"), false, "Site-local (deprecated by RFC 3879)"},
}

// isSpecialPurpose reports whether the most specific special-purpose row
// containing a says it is not globally reachable.
func isSpecialPurpose(a netip.Addr) bool {
	bits, global := -1, true
	for _, row := range specialPurpose {
		if row.prefix.Bits() > bits && row.prefix.Contains(a) {
			bits, global = row.prefix.Bits(), row.global
		}
	}
	return !global
}

// canonicalPeer folds every IPv6 spelling of an IPv4 address to plain IPv4
// and drops any zone, so the rules below see one form per host.
func canonicalPeer(ip netip.Addr) netip.Addr {
	ip = ip.WithZone("")
	if !ip.Is6() {
		return ip
	}
	b := ip.As16()
	last4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	switch {
	case ip == netip.IPv6Unspecified() || ip == netip.IPv6Loopback():
		// ::/128 and ::1 sit inside ::/96 but are IPv6 addresses of their own.
		return ip
	case prefixMapped.Contains(ip), prefixTranslated.Contains(ip), prefixV4Compat.Contains(ip), prefixNAT64.Contains(ip):
		return last4
	case prefix6to4.Contains(ip):
		// 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD right after the prefix.
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	case prefixTeredo.Contains(ip):
		// 2001:0:SSSS:SSSS:FLAG:PORT:CCCC:CCCC: the client's address,
		// inverted, in the last 32 bits. Reaching it means reaching it.
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
	}
	return ip
}

// peerPolicy is the compiled form of config.PeerPolicy plus the node's own
// addresses and the relay port range. It is immutable; a reload (or a
// change of the node's addresses) builds a new one.
type peerPolicy struct {
	allow   []netip.Prefix
	deny    []netip.Prefix
	cluster []netip.Prefix
	// node are the node's addresses that only relay ports may reach: all of
	// them but the ones an allow entry names exactly (and the deny-listed
	// ones, refused anyway).
	node       []netip.Addr
	relayPorts config.PortRange
}

// newPeerPolicy compiles the config. Prefixes were validated by config.Parse,
// an error here means a caller skipped validation.
func newPeerPolicy(p config.PeerPolicy, nodeAddrs []netip.Addr, relayPorts config.PortRange) (*peerPolicy, error) {
	pp := peerPolicy{relayPorts: relayPorts}
	var err error
	if pp.allow, err = parsePrefixes(p.Allow); err != nil {
		return nil, fmt.Errorf("peerPolicy.allow: %w", err)
	}
	if pp.deny, err = parsePrefixes(p.Deny); err != nil {
		return nil, fmt.Errorf("peerPolicy.deny: %w", err)
	}
	if pp.cluster, err = parsePrefixes(p.ClusterCIDRs); err != nil {
		return nil, fmt.Errorf("peerPolicy.clusterCIDRs: %w", err)
	}
	for _, a := range nodeAddrs {
		// Loopback and link-local addresses (a host has one per veth) are
		// refused on every port anyway: leaving them out keeps the
		// per-packet scan (relayPortOnly) to the handful that matter.
		a = canonicalPeer(a)
		if hardDenied(a) == "" && !slices.Contains(pp.node, a) && !pp.allowsExactly(a) {
			pp.node = append(pp.node, a)
		}
	}
	return &pp, nil
}

// hardDenied is the reason no configuration may open a (canonical) address,
// or "".
func hardDenied(a netip.Addr) string {
	for _, r := range hardDenyRanges {
		if r.prefix.Contains(a) {
			return r.reason
		}
	}
	return ""
}

// allowsExactly reports whether an allow entry is the single address a.
func (p *peerPolicy) allowsExactly(a netip.Addr) bool {
	for _, pr := range p.allow {
		if pr.IsSingleIP() && pr.Addr() == a {
			return true
		}
	}
	return false
}

// parsePrefixes parses CIDRs and canonicalises them the same way as peers,
// so an allow entry written as ::ffff:10.0.0.0/104 still means 10.0.0.0/8.
func parsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, err
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// check decides whether a client may be granted a permission for peer
// (no port: CreatePermission, and the address part of ChannelBind and
// Connect). A node address passes here; checkPort then admits only its
// relay ports. It returns ok, or the reason for refusing. It is a pure
// function of the policy and the address.
func (p *peerPolicy) check(peer netip.Addr) (ok bool, reason string) {
	if !peer.IsValid() {
		return false, denyInvalid
	}
	peer = canonicalPeer(peer)
	if reason := hardDenied(peer); reason != "" {
		return false, reason
	}
	if containsAddr(p.deny, peer) {
		return false, denyDenyList
	}
	if slices.Contains(p.node, peer) || containsAddr(p.allow, peer) {
		return true, ""
	}
	switch {
	case containsAddr(defaultDenyRanges, peer):
		return false, denyPrivate
	case isSpecialPurpose(peer):
		return false, denySpecialPurpose
	case containsAddr(p.cluster, peer):
		return false, denyCluster
	}
	return true, ""
}

// checkPort decides for a peer with its port (ChannelBind, Connect, and
// every packet relayed to or from a peer): check, and a node address only
// on a relay port.
func (p *peerPolicy) checkPort(peer netip.AddrPort) (ok bool, reason string) {
	if ok, reason := p.check(peer.Addr()); !ok {
		return false, reason
	}
	if !p.relayPortOnly(peer) {
		return true, ""
	}
	return false, denyNode
}

// localPeerPorts are the ports of a node address a the fast path may relay
// to (checkPort's rule, for the kernel to apply too): every port when an
// allow entry names a exactly, else the relay port range.
func (p *peerPolicy) localPeerPorts(a netip.Addr) fastpath.PortRange {
	if p.allowsExactly(canonicalPeer(a)) {
		return fastpath.AllPorts
	}
	return fastpath.PortRange{Min: uint16(p.relayPorts.Min), Max: uint16(p.relayPorts.Max)}
}

// relayPortOnly reports whether peer is a node address on a port outside
// the relay port range. It is on the per-packet path: no allocation, a
// scan of a handful of addresses.
func (p *peerPolicy) relayPortOnly(peer netip.AddrPort) bool {
	if len(p.node) == 0 {
		return false
	}
	port := int(peer.Port())
	if port >= p.relayPorts.Min && port <= p.relayPorts.Max {
		return false
	}
	// Canonical, so that 64:ff9b::<node address> (reaching the node through
	// a NAT64 gateway) is the node too.
	return slices.Contains(p.node, canonicalPeer(peer.Addr()))
}

func containsAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
