package relay

import (
	"fmt"
	"net/netip"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// Peer policy: which peer addresses a client may reach through the relay.
//
// A TURN relay is an open proxy into whatever network it sits in, so the
// default must be "public internet only". The check runs in three steps:
//
//  1. Canonicalise: IPv6 spellings that embed an IPv4 address (v4-mapped,
//     v4-compatible, 6to4, NAT64) are folded to that IPv4 address. Without
//     this, ::ffff:127.0.0.1 or 64:ff9b::7f00:1 would slip past an IPv4 rule
//     (coturn CVE-2026-27624 and issue #1945 were exactly such bypasses).
//  2. Hard deny: addresses no configuration may open (loopback, link-local
//     including cloud metadata at 169.254.169.254, unspecified, multicast,
//     broadcast).
//  3. Default deny, unless allow-listed: private ranges, shared address
//     space, unique-local IPv6, the cluster's CIDRs and the node's own
//     addresses. peerPolicy.deny is checked before allow and always wins.

// Reasons a peer is refused; they are the "reason" label of
// turnpike_relay_peers_denied_total.
const (
	denyUnspecified = "unspecified"
	denyLoopback    = "loopback"
	denyLinkLocal   = "link_local"
	denyMulticast   = "multicast"
	denyBroadcast   = "broadcast"
	denyPrivate     = "private"
	denyCluster     = "cluster"
	denyNode        = "node"
	denyDenyList    = "deny_list"
	denyInvalid     = "invalid"
)

// peerDenyReasons lists every reason, so metrics can be pre-initialised.
var peerDenyReasons = []string{
	denyUnspecified, denyLoopback, denyLinkLocal, denyMulticast, denyBroadcast,
	denyPrivate, denyCluster, denyNode, denyDenyList, denyInvalid,
}

var (
	// Ranges whose IPv6 form carries an IPv4 address (see canonicalPeer).
	prefix6to4  = netip.MustParsePrefix("2002::/16")
	prefixNAT64 = netip.MustParsePrefix("64:ff9b::/96")
	// IPv4-compatible addresses (::a.b.c.d, deprecated by RFC 4291).
	prefixV4Compat = netip.MustParsePrefix("::/96")

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

// canonicalPeer folds every IPv6 spelling of an IPv4 address to plain IPv4
// and drops any zone, so the rules below see one form per host.
func canonicalPeer(ip netip.Addr) netip.Addr {
	ip = ip.WithZone("")
	if ip.Is4In6() {
		return ip.Unmap()
	}
	if !ip.Is6() {
		return ip
	}
	b := ip.As16()
	switch {
	case ip == netip.IPv6Unspecified() || ip == netip.IPv6Loopback():
		// ::/128 and ::1 sit inside ::/96 but are IPv6 addresses of their own.
		return ip
	case prefixV4Compat.Contains(ip):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case prefixNAT64.Contains(ip):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case prefix6to4.Contains(ip):
		// 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD right after the prefix.
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	}
	return ip
}

// peerPolicy is the compiled form of config.PeerPolicy plus the node's own
// addresses. It is immutable; a reload builds a new one.
type peerPolicy struct {
	allow   []netip.Prefix
	deny    []netip.Prefix
	cluster []netip.Prefix
	node    []netip.Addr
}

// newPeerPolicy compiles the config. Prefixes were validated by config.Parse,
// an error here means a caller skipped validation.
func newPeerPolicy(p config.PeerPolicy, nodeAddrs []netip.Addr) (*peerPolicy, error) {
	var pp peerPolicy
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
		pp.node = append(pp.node, canonicalPeer(a))
	}
	return &pp, nil
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

// check decides whether a client may reach peer. It returns ok, or the reason
// for refusing. It is a pure function of the policy and the address.
func (p *peerPolicy) check(peer netip.Addr) (ok bool, reason string) {
	if !peer.IsValid() {
		return false, denyInvalid
	}
	peer = canonicalPeer(peer)
	for _, r := range hardDenyRanges {
		if r.prefix.Contains(peer) {
			return false, r.reason
		}
	}
	if containsAddr(p.deny, peer) {
		return false, denyDenyList
	}
	if containsAddr(p.allow, peer) {
		return true, ""
	}
	switch {
	case containsAddr(defaultDenyRanges, peer):
		return false, denyPrivate
	case containsAddr(p.cluster, peer):
		return false, denyCluster
	case p.isNodeAddr(peer):
		return false, denyNode
	}
	return true, ""
}

func (p *peerPolicy) isNodeAddr(peer netip.Addr) bool {
	for _, a := range p.node {
		if a == peer {
			return true
		}
	}
	return false
}

func containsAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
