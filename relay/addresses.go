package relay

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// addresses are the relay's resolved addresses for one config generation.
type addresses struct {
	// bind is where sockets bind; empty means all addresses.
	bind []netip.Addr
	// advertised is the XOR-RELAYED-ADDRESS per family (at most one each).
	advertised4, advertised6 netip.Addr
	// source says where the advertised addresses came from, for /status.
	source string
}

// environment is what the relay learns from its pod: NODE_NAME and HOST_IP
// come from the downward API.
type environment struct {
	nodeName string
	hostIP   netip.Addr
}

// resolveAddresses applies the rules of config.Addresses:
// bind = addresses.bind, else HOST_IP, else all addresses;
// advertised = addresses.nodes[NODE_NAME], else addresses.external, else
// the bind address of that family, else an address of a local interface.
func resolveAddresses(a config.Addresses, env environment) (addresses, error) {
	var out addresses
	bind, err := parseAddrs(a.Bind)
	if err != nil {
		return out, fmt.Errorf("addresses.bind: %w", err)
	}
	if len(bind) == 0 && env.hostIP.IsValid() {
		bind = []netip.Addr{env.hostIP}
	}
	out.bind = bind

	external, source := a.External, "addresses.external"
	if n, ok := a.Nodes[env.nodeName]; ok && env.nodeName != "" {
		external, source = n.External, "addresses.nodes["+env.nodeName+"]"
		if n.Source != "" {
			source += " (" + n.Source + ")"
		}
	}
	ext, err := parseAddrs(external)
	if err != nil {
		return out, fmt.Errorf("%s: %w", source, err)
	}
	if len(ext) == 0 {
		ext, source = bind, "bind address"
	}
	out.advertised4, out.advertised6 = firstOfEachFamily(ext)
	if !out.advertised4.IsValid() && !out.advertised6.IsValid() && len(bind) == 0 {
		out.advertised4, out.advertised6 = firstOfEachFamily(interfaceAddrs())
		source = "local interface"
	}
	out.source = source
	return out, nil
}

// forNetwork returns the bind address (unspecified when binding all) and the
// advertised address for an allocation of network "udp4", "udp6", "tcp4" or
// "tcp6". An allocation of a family the relay does not serve fails (508).
func (a addresses) forNetwork(network string) (bind, advertised netip.Addr, err error) {
	want6 := network == "udp6" || network == "tcp6"
	advertised = a.advertised4
	bind = netip.IPv4Unspecified()
	if want6 {
		advertised = a.advertised6
		bind = netip.IPv6Unspecified()
	}
	if !advertised.IsValid() {
		return bind, advertised, fmt.Errorf("no advertised address for %s", network)
	}
	if len(a.bind) == 0 {
		return bind, advertised, nil
	}
	for _, b := range a.bind {
		if b.Is6() == want6 {
			return b, advertised, nil
		}
	}
	return bind, advertised, fmt.Errorf("no bind address for %s", network)
}

// all lists the advertised and bind addresses: the node's own addresses,
// which the peer policy denies by default.
func (a addresses) all() []netip.Addr {
	out := append([]netip.Addr{}, a.bind...)
	for _, x := range []netip.Addr{a.advertised4, a.advertised6} {
		if x.IsValid() {
			out = append(out, x)
		}
	}
	return out
}

// advertisedList is the advertised addresses as strings, for /status.
func (a addresses) advertisedList() []string {
	var out []string
	for _, x := range []netip.Addr{a.advertised4, a.advertised6} {
		if x.IsValid() {
			out = append(out, x.String())
		}
	}
	return out
}

func parseAddrs(ss []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

func firstOfEachFamily(addrs []netip.Addr) (v4, v6 netip.Addr) {
	for _, a := range addrs {
		switch {
		case a.Is4() && !v4.IsValid():
			v4 = a
		case a.Is6() && !v6.IsValid():
			v6 = a
		}
	}
	return v4, v6
}

// interfaceAddrs lists global unicast addresses of local interfaces, for a
// standalone relay given neither external nor bind addresses.
func interfaceAddrs() []netip.Addr {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().IsGlobalUnicast() {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
