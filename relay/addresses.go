package relay

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// IP families, the index of per-family arrays.
const (
	ipv4 = 0
	ipv6 = 1
)

func familyOf(a netip.Addr) int {
	if a.Unmap().Is4() {
		return ipv4
	}
	return ipv6
}

// sourcedAddr is an address and where it came from, for /status, logs and
// the address info metric: "addresses.nodes[n1] (ExternalIP)",
// "stun:stun.example.net:3478", "addresses.external", "bind address" or
// "local interface".
type sourcedAddr struct {
	addr   netip.Addr
	source string
}

// addresses are the relay's resolved addresses for one config generation
// and STUN result.
type addresses struct {
	// bind is where sockets bind; empty means all addresses.
	bind []netip.Addr
	// advertised is the XOR-RELAYED-ADDRESS per family (ipv4, ipv6); an
	// invalid address means the relay does not serve that family.
	advertised [2]sourcedAddr
}

// environment is what the relay learns from its pod: NODE_NAME and HOST_IP
// come from the downward API.
type environment struct {
	nodeName string
	hostIP   netip.Addr
}

// resolveAddresses applies the rules of config.Addresses.
//
// Bind: addresses.bind, else HOST_IP, else all addresses.
//
// Advertised, per family, the first source that has an address of that
// family: this node's entry addresses.nodes[NODE_NAME], the address STUN
// discovered (found, only while addresses.stun is set), addresses.external,
// the bind address. A relay that binds all addresses and found nothing for
// either family advertises a global address of a local interface.
//
// Per family, because a node entry may carry only IPv4 while STUN or the
// bind address still answers for IPv6, and the operator renders a node that
// relies on STUN as an entry with no address at all.
func resolveAddresses(a config.Addresses, env environment, found [2]sourcedAddr) (addresses, error) {
	var out addresses
	bind, err := bindAddrs(a, env)
	if err != nil {
		return out, err
	}
	out.bind = bind
	node, err := nodeAddrs(a, env)
	if err != nil {
		return out, err
	}
	external, err := parseAddrs(a.External)
	if err != nil {
		return out, fmt.Errorf("addresses.external: %w", err)
	}
	var stun []sourcedAddr
	if a.STUN != nil {
		stun = found[:]
	}
	candidates := [][]sourcedAddr{node, stun, tag(external, "addresses.external"), tag(bind, "bind address")}
	for fam := range out.advertised {
		out.advertised[fam] = firstOfFamily(fam, candidates...)
	}
	if !out.serves() && len(bind) == 0 {
		local := tag(interfaceAddrs(), "local interface")
		for fam := range out.advertised {
			out.advertised[fam] = firstOfFamily(fam, local)
		}
	}
	return out, nil
}

// bindAddrs is addresses.bind, else HOST_IP, else nil (all addresses).
func bindAddrs(a config.Addresses, env environment) ([]netip.Addr, error) {
	bind, err := parseAddrs(a.Bind)
	if err != nil {
		return nil, fmt.Errorf("addresses.bind: %w", err)
	}
	if len(bind) == 0 && env.hostIP.IsValid() {
		bind = []netip.Addr{env.hostIP}
	}
	return bind, nil
}

// nodeAddrs is this node's entry, tagged with its source: the content of
// addresses.nodeFile when that is set, else addresses.nodes[NODE_NAME].
func nodeAddrs(a config.Addresses, env environment) ([]sourcedAddr, error) {
	if a.NodeFile != "" {
		return nodeFileAddrs(a.NodeFile)
	}
	n, ok := a.Nodes[env.nodeName]
	if !ok || env.nodeName == "" {
		return nil, nil
	}
	return tagNodeEntry(n, "addresses.nodes["+env.nodeName+"]")
}

// nodeFileAddrs reads addresses.nodeFile. A missing file is no entry, as is
// an empty one: the pod annotation it projects is not written yet.
func nodeFileAddrs(path string) ([]sourcedAddr, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("addresses.nodeFile: %w", err)
	}
	n, err := config.ParseNodeAddresses(data)
	if err != nil || n == nil {
		return nil, err
	}
	return tagNodeEntry(*n, "addresses.nodeFile")
}

func tagNodeEntry(n config.NodeAddresses, source string) ([]sourcedAddr, error) {
	if n.Source != "" {
		source += " (" + n.Source + ")"
	}
	addrs, err := parseAddrs(n.External)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return tag(addrs, source), nil
}

// stunTargets are the local addresses STUN discovery asks from, one per
// family that needs it: a family this node's entry does not already cover
// and that the relay serves. Asking from the bind address makes the NAT map
// the same source address the relay sockets use.
func stunTargets(a config.Addresses, env environment) ([]netip.Addr, error) {
	bind, err := bindAddrs(a, env)
	if err != nil {
		return nil, err
	}
	node, err := nodeAddrs(a, env)
	if err != nil {
		return nil, err
	}
	local := bind
	if len(bind) == 0 {
		// Binding all addresses: ask from the unspecified address of each
		// family this machine has a global address of.
		for _, x := range interfaceAddrs() {
			local = append(local, unspecified(familyOf(x)))
		}
	}
	var out []netip.Addr
	for fam := range 2 {
		if firstOfFamily(fam, node).addr.IsValid() {
			continue
		}
		if b := firstOfFamily(fam, tag(local, "")); b.addr.IsValid() {
			out = append(out, b.addr)
		}
	}
	return out, nil
}

func unspecified(fam int) netip.Addr {
	if fam == ipv4 {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// serves reports whether the relay has an address to advertise at all.
func (a addresses) serves() bool {
	return a.advertised[ipv4].addr.IsValid() || a.advertised[ipv6].addr.IsValid()
}

// forNetwork returns the bind address (unspecified when binding all) and the
// advertised address for an allocation of network "udp4", "udp6", "tcp4" or
// "tcp6". An allocation of a family the relay does not serve fails (508).
func (a addresses) forNetwork(network string) (bind, advertised netip.Addr, err error) {
	fam := ipv4
	if network == "udp6" || network == "tcp6" {
		fam = ipv6
	}
	advertised, bind = a.advertised[fam].addr, unspecified(fam)
	if !advertised.IsValid() {
		return bind, advertised, fmt.Errorf("no advertised address for %s", network)
	}
	if len(a.bind) == 0 {
		return bind, advertised, nil
	}
	for _, b := range a.bind {
		if familyOf(b) == fam {
			return b, advertised, nil
		}
	}
	return bind, advertised, fmt.Errorf("no bind address for %s", network)
}

// all lists the advertised and bind addresses: the node's own addresses,
// which the peer policy denies by default.
func (a addresses) all() []netip.Addr {
	out := append([]netip.Addr{}, a.bind...)
	for _, x := range a.advertised {
		if x.addr.IsValid() {
			out = append(out, x.addr)
		}
	}
	return out
}

// advertisedList is the advertised addresses as strings, for /status.
func (a addresses) advertisedList() []string {
	var out []string
	for _, x := range a.advertised {
		if x.addr.IsValid() {
			out = append(out, x.addr.String())
		}
	}
	return out
}

// source says where the advertised addresses came from, for /status and
// logs: one source, or both joined when the families differ.
func (a addresses) source() string {
	var out []string
	for _, x := range a.advertised {
		if x.addr.IsValid() && (len(out) == 0 || out[0] != x.source) {
			out = append(out, x.source)
		}
	}
	return strings.Join(out, ", ")
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

func tag(addrs []netip.Addr, source string) []sourcedAddr {
	out := make([]sourcedAddr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, sourcedAddr{a, source})
	}
	return out
}

// firstOfFamily is the first valid address of family fam in the first
// candidate list that has one.
func firstOfFamily(fam int, candidates ...[]sourcedAddr) sourcedAddr {
	for _, list := range candidates {
		for _, x := range list {
			if x.addr.IsValid() && familyOf(x.addr) == fam {
				return x
			}
		}
	}
	return sourcedAddr{}
}

// errNoAddress refuses a config with nothing to advertise.
var errNoAddress = errors.New("no address to advertise: set addresses.external or addresses.bind")

// resolveState resolves st's addresses with the current STUN result and
// builds its peer policy, which keeps peers off the node's own addresses
// but for its relay ports (so it changes whenever they do).
func (r *Relay) resolveState(st *state) error {
	addrs, err := resolveAddresses(st.cfg.Addresses, r.env, r.stun.current())
	if err != nil {
		return err
	}
	if !addrs.serves() {
		return errNoAddress
	}
	onHost := hostAddrs()
	policy, err := newPeerPolicy(st.cfg.PeerPolicy, nodeAddrList(addrs, onHost, r.env), r.cfg.RelayPortRange)
	if err != nil {
		return err
	}
	st.addrs, st.policy, st.hostAddrs = addrs, policy, onHost
	return nil
}

// onHost reports whether a is an address of this host (a loopback address
// is one even when lo carries only 127.0.0.1).
func (st *state) onHost(a netip.Addr) bool { return isHostAddr(st.hostAddrs, a) }

func isHostAddr(hostAddrs []netip.Addr, a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || slices.Contains(hostAddrs, a)
}

// nodeAddrList are the node's own addresses: every address on its
// interfaces (the relay runs in the host's network namespace), the
// advertised and bind addresses (a 1:1 NAT's public address is on no
// interface), and HOST_IP.
func nodeAddrList(a addresses, onHost []netip.Addr, env environment) []netip.Addr {
	node := append(a.all(), onHost...)
	if env.hostIP.IsValid() {
		node = append(node, env.hostIP)
	}
	return node
}

// refreshNodeAddrs rebuilds the peer policy when the addresses on the
// host's interfaces changed (an address added to an interface must not
// become a reachable peer). The reload loop calls it on every tick.
func (r *Relay) refreshNodeAddrs() {
	onHost := hostAddrs()
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	st := *r.current()
	if slices.Equal(onHost, st.hostAddrs) {
		return
	}
	st.hostAddrs = onHost
	policy, err := newPeerPolicy(st.cfg.PeerPolicy, nodeAddrList(st.addrs, onHost, r.env), r.cfg.RelayPortRange)
	if err != nil {
		r.log.Error("peer policy not rebuilt for the node's new addresses", "error", err.Error())
		return
	}
	st.policy = policy
	r.state.Store(&st)
	r.recheckPeers(policy)
	r.log.Info("node addresses changed: peer policy rebuilt", "addresses", len(onHost))
}

// hostAddrs lists every address on the host's interfaces, any scope,
// sorted, so two lists compare equal when the set is the same.
func hostAddrs() []netip.Addr {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			out = append(out, p.Addr().Unmap().WithZone(""))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
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
