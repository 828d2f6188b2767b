package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// STUN discovery (addresses.stun): a relay behind a NAT — a cloud VM with a
// private address and a 1:1 public IP, a node behind a router — has no
// interface that carries its public address, and the operator may not know
// it either. The relay then asks STUN servers (RFC 8489 Binding requests
// over UDP) which address its packets arrive from, and advertises that.
//
// One round asks, for each family that needs it (see stunTargets), the
// servers in order until one answers. Rounds run before the relay reports
// ready, every addresses.stun.interval, on every config change and on
// SIGHUP; after a failed round the next comes sooner (1s, 2s, 4s, ... up to
// the interval). A changed result applies to new allocations only: an
// existing allocation keeps the address it was given.

const (
	defaultSTUNInterval = 60 * time.Second
	// stunTimeout bounds one server; with the retransmissions below a
	// server gets three tries (at 0, 0.5 and 1.5 s).
	stunTimeout = 3 * time.Second
	// stunFirstRTO is RFC 8489's initial retransmission timeout, doubled
	// after each try.
	stunFirstRTO = 500 * time.Millisecond
	// stunMinBackoff is the wait after the first failed round.
	stunMinBackoff = time.Second
	// stunStaleIntervals: a discovered address that no server confirmed for
	// this many intervals is dropped. Until then a failed round keeps it: a
	// STUN server outage should not flip new allocations to the internal
	// address, which would be wrong for certain.
	stunStaleIntervals = 3
)

// stunDiscovery is the relay's discovery state.
type stunDiscovery struct {
	// wake asks the loop for a round now (config change, SIGHUP).
	wake chan struct{}

	mu       sync.Mutex
	found    [2]discoveredAddr // per family
	failures int               // consecutive failed rounds, for the backoff
	lastErr  string
}

// discoveredAddr is one family's result.
type discoveredAddr struct {
	addr   netip.Addr
	server string
	at     time.Time // when a server last confirmed it
}

func newSTUNDiscovery() *stunDiscovery {
	return &stunDiscovery{wake: make(chan struct{}, 1)}
}

// wakeUp requests a round without blocking; requests made while one is
// pending collapse into it.
func (d *stunDiscovery) wakeUp() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// current is the discovered address per family, for resolveAddresses.
func (d *stunDiscovery) current() [2]sourcedAddr {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out [2]sourcedAddr
	for fam, f := range d.found {
		if f.addr.IsValid() {
			out[fam] = sourcedAddr{f.addr, "stun:" + f.server}
		}
	}
	return out
}

func (d *stunDiscovery) status(servers []string) *config.STUNStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &config.STUNStatus{Servers: servers, Discovered: []config.DiscoveredAddress{}, LastError: d.lastErr}
	for _, f := range d.found {
		if f.addr.IsValid() {
			s.Discovered = append(s.Discovered, config.DiscoveredAddress{Address: f.addr.String(), Server: f.server, ConfirmedAt: f.at.UTC()})
		}
	}
	return s
}

// startSTUN runs the first round (so a relay that reports ready already
// advertises what it discovered) and then the loop, until ctx ends.
func (r *Relay) startSTUN(ctx context.Context) {
	next := r.stunRound(ctx)
	go r.stunLoop(ctx, next)
}

// stunLoop runs rounds until ctx ends. It runs even without addresses.stun
// (rounds then do nothing), so a reload that turns discovery on needs no
// restart.
func (r *Relay) stunLoop(ctx context.Context, next time.Duration) {
	timer := time.NewTimer(next)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.stun.wake:
		}
		timer.Reset(r.stunRound(ctx))
	}
}

// stunRound asks for every family that needs it, records the result,
// installs new addresses if it changed and returns when to run again.
func (r *Relay) stunRound(ctx context.Context) time.Duration {
	a := r.current().cfg.Addresses
	if a.STUN == nil {
		return r.setDiscovered(ctx, [2]discoveredAddr{}, nil, defaultSTUNInterval)
	}
	interval := a.STUN.Interval.Duration
	if interval == 0 {
		interval = defaultSTUNInterval
	}
	targets, err := stunTargets(a, r.env)
	if err != nil { // resolveState accepted the same config, so this is unexpected
		r.log.Error("STUN discovery: cannot tell what to ask from", "error", err.Error())
		return interval
	}
	old := r.stunFound()
	var found [2]discoveredAddr // families no longer asked about are dropped
	var errs []error
	for _, local := range targets {
		fam := familyOf(local)
		addr, server, err := stunDiscover(ctx, local, a.STUN.Servers)
		if ctx.Err() != nil {
			return interval // shutting down: neither a result nor a failure
		}
		if err != nil {
			r.metrics.stunDiscoveries.WithLabelValues("failure").Inc()
			errs = append(errs, err)
			found[fam] = keepUnlessStale(old[fam], timeNow(), stunStaleIntervals*interval)
			continue
		}
		r.metrics.stunDiscoveries.WithLabelValues("success").Inc()
		r.metrics.stunLastSuccess.SetToCurrentTime()
		found[fam] = discoveredAddr{addr: addr, server: server, at: timeNow()}
	}
	return r.setDiscovered(ctx, found, errors.Join(errs...), interval)
}

func (r *Relay) stunFound() [2]discoveredAddr {
	r.stun.mu.Lock()
	defer r.stun.mu.Unlock()
	return r.stun.found
}

// keepUnlessStale keeps a discovered address after a failed lookup, unless
// no server confirmed it for maxAge.
func keepUnlessStale(d discoveredAddr, now time.Time, maxAge time.Duration) discoveredAddr {
	if !d.addr.IsValid() || now.Sub(d.at) > maxAge {
		return discoveredAddr{}
	}
	return d
}

// setDiscovered records a round's outcome, logs it, installs the new
// addresses when they changed, and returns the wait before the next round:
// the interval after a success, a doubling backoff after a failure.
func (r *Relay) setDiscovered(ctx context.Context, found [2]discoveredAddr, err error, interval time.Duration) time.Duration {
	d := r.stun
	d.mu.Lock()
	// The server is part of the source shown in /status and the metric.
	changed := !sameResult(d.found[ipv4], found[ipv4]) || !sameResult(d.found[ipv6], found[ipv6])
	d.found = found
	next := interval
	if err != nil {
		d.failures++
		d.lastErr = err.Error()
		next = min(stunMinBackoff<<min(d.failures-1, 16), next)
	} else {
		d.failures, d.lastErr = 0, ""
	}
	d.mu.Unlock()

	if err != nil {
		r.log.Warn("STUN discovery failed; using the last discovered address while it is fresh, else the next address source",
			"error", err.Error(), "retryIn", next.String())
	}
	if changed && ctx.Err() == nil {
		r.reresolve()
	}
	return next
}

func sameResult(a, b discoveredAddr) bool { return a.addr == b.addr && a.server == b.server }

// reresolve rebuilds the current state's addresses and peer policy after a
// new STUN result. It holds reloadMu so that a concurrent Reload, which
// reads the STUN result too, cannot install a state built from the old one
// after this.
func (r *Relay) reresolve() {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	st := *r.current()
	if err := r.resolveState(&st); err != nil {
		r.log.Error("STUN discovery: cannot apply the new address; keeping the old one", "error", err.Error())
		return
	}
	r.state.Store(&st)
	r.metrics.setAddressInfo(st.addrs)
	r.log.Info("advertised address changed", "advertised", st.addrs.advertisedList(), "addressSource", st.addrs.source())
}

// stunDiscover asks the servers in order from local and returns the first
// answer and the server that gave it.
func stunDiscover(ctx context.Context, local netip.Addr, servers []string) (netip.Addr, string, error) {
	var errs []error
	for _, server := range servers {
		addr, err := stunLookup(ctx, local, server)
		if err == nil {
			return addr, server, nil
		}
		errs = append(errs, fmt.Errorf("%s from %s: %w", server, local, err))
		if ctx.Err() != nil {
			break
		}
	}
	return netip.Addr{}, "", errors.Join(errs...)
}

// stunLookup sends a Binding request to server from local (any port: only
// the address counts) and returns the address of its XOR-MAPPED-ADDRESS.
func stunLookup(ctx context.Context, local netip.Addr, server string) (netip.Addr, error) {
	network := "udp4"
	if familyOf(local) == ipv6 {
		network = "udp6"
	}
	raddr, err := resolveUDP(ctx, network, server)
	if err != nil {
		return netip.Addr{}, err
	}
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return netip.Addr{}, err
	}
	deadline := time.Now().Add(stunTimeout)
	for rto := stunFirstRTO; time.Now().Before(deadline); rto *= 2 {
		if _, err := conn.WriteToUDPAddrPort(req.Raw, raddr); err != nil {
			return netip.Addr{}, err
		}
		wait := time.Now().Add(rto)
		if wait.After(deadline) {
			wait = deadline
		}
		_ = conn.SetReadDeadline(wait)
		mapped, err := readBindingResponse(conn, raddr, req.TransactionID)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue // retransmit
		}
		if err != nil {
			return netip.Addr{}, err
		}
		if familyOf(mapped) != familyOf(local) {
			return netip.Addr{}, fmt.Errorf("answered with %s, not an address of the asking family", mapped)
		}
		return mapped, nil
	}
	return netip.Addr{}, fmt.Errorf("no answer within %s", stunTimeout)
}

// readBindingResponse reads until the answer to transaction id arrives from
// server, skipping anything else, or the read deadline passes.
func readBindingResponse(conn *net.UDPConn, server netip.AddrPort, id [stun.TransactionIDSize]byte) (netip.Addr, error) {
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.Addr{}, err
		}
		if from.Addr().Unmap() != server.Addr() || from.Port() != server.Port() {
			continue
		}
		m := &stun.Message{Raw: append([]byte{}, buf[:n]...)}
		if m.Decode() != nil || m.TransactionID != id || m.Type.Method != stun.MethodBinding {
			continue
		}
		return mappedAddress(m)
	}
}

// mappedAddress is the address of a Binding response: XOR-MAPPED-ADDRESS,
// else MAPPED-ADDRESS (servers of RFC 3489 only send that).
func mappedAddress(m *stun.Message) (netip.Addr, error) {
	if m.Type.Class == stun.ClassErrorResponse {
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(m)
		return netip.Addr{}, fmt.Errorf("error response %d %s", code.Code, code.Reason)
	}
	var ip net.IP
	var xor stun.XORMappedAddress
	var plain stun.MappedAddress
	switch {
	case xor.GetFrom(m) == nil:
		ip = xor.IP
	case plain.GetFrom(m) == nil:
		ip = plain.IP
	default:
		return netip.Addr{}, errors.New("response without a mapped address")
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, fmt.Errorf("bad mapped address %v", ip)
	}
	return a.Unmap(), nil
}

// resolveUDP resolves host:port to an address of network's family.
func resolveUDP(ctx context.Context, network, server string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", portStr)
	}
	ipNet := "ip4"
	if network == "udp6" {
		ipNet = "ip6"
	}
	ctx, cancel := context.WithTimeout(ctx, stunTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), nil
}

// validateSTUNServers checks that every server is host:port, so a typo
// fails the config load instead of every discovery round.
func validateSTUNServers(servers []string) error {
	for i, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if err == nil && host == "" {
			err = errors.New("empty host")
		}
		if err == nil {
			if p, perr := strconv.ParseUint(port, 10, 16); perr != nil || p == 0 {
				err = fmt.Errorf("bad port %q", port)
			}
		}
		if err != nil {
			return fmt.Errorf("addresses.stun.servers[%d]: %q is not host:port: %w", i, s, err)
		}
	}
	return nil
}
