package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pion/stun/v4"
)

// NAT behaviour discovery (RFC 5780 sections 4.3 and 4.4): what the NAT
// between this machine and a STUN server does to UDP, asked of a server
// with an alternate address and port (a turnpike relay with
// spec.behaviorDiscovery, coturn with two listening addresses, STUNTMAN).
//
// Mapping: the public address the NAT gives this socket towards the
// server's primary, towards its alternate address, and towards its
// alternate address and port. Filtering: whether an answer the server
// sends from its alternate address and port, or from its alternate port
// only, gets through. The filtering tests run on a socket of their own
// that has sent nothing to the alternate address: once it has, the NAT
// lets that address in and every filtering test would pass. They run
// first, so that no socket of this machine has sent to the alternate
// address yet: some NATs keep their filter state per NAT, not per mapping.

// Behavior is one of RFC 4787's NAT behaviours, for mapping or filtering.
type Behavior string

const (
	EndpointIndependent     Behavior = "endpoint-independent"
	AddressDependent        Behavior = "address-dependent"
	AddressAndPortDependent Behavior = "address-and-port-dependent"
)

// NATResult is what the behaviour tests found.
type NATResult struct {
	Server netip.AddrPort
	// Other is the server's alternate address and port (OTHER-ADDRESS).
	Other netip.AddrPort
	// Local is the mapping test socket's address, Mapped its public
	// address towards the server's primary; NoNAT is true when they are
	// the same.
	Local, Mapped netip.AddrPort
	NoNAT         bool
	Mapping       Behavior
	Filtering     Behavior
}

// NATOptions say which server to ask and how long to wait.
type NATOptions struct {
	// Server is host:port of the STUN server.
	Server string
	// Timeout is how long one test waits for an answer, retransmitting
	// (RFC 8489 timing, from 250ms); default 3s. A filtering test that
	// gets no answer takes this long.
	Timeout time.Duration
	// Listen opens the test sockets; default net.ListenUDP on a random
	// port of the server's family. Tests use it to open them inside a
	// network namespace.
	Listen func(network string) (*net.UDPConn, error)
}

// ParseSTUNURL parses stun:host[:port] (RFC 7064; default port 3478) into
// host:port.
func ParseSTUNURL(raw string) (string, error) {
	rest, ok := strings.CutPrefix(raw, "stun:")
	if !ok || rest == "" || strings.HasPrefix(rest, "//") || strings.Contains(rest, "?") {
		return "", fmt.Errorf("%q is not a STUN URL: want stun:host[:port]", raw)
	}
	if host, port, err := net.SplitHostPort(rest); err == nil {
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 || host == "" {
			return "", fmt.Errorf("%q: bad host or port", raw)
		}
		return rest, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
	if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
		return "", fmt.Errorf("%q: bad host (IPv6 addresses go in brackets: stun:[2001:db8::1]:3478)", raw)
	}
	return net.JoinHostPort(host, "3478"), nil
}

// ErrNoBehaviorDiscovery means the server does not do RFC 5780: it sent no
// OTHER-ADDRESS, or refused a CHANGE-REQUEST.
var ErrNoBehaviorDiscovery = errors.New("the server does not support NAT behaviour discovery (RFC 5780): no OTHER-ADDRESS in its answer; " +
	"turnpike relays need spec.behaviorDiscovery with an alternate address, coturn two listening addresses")

// DiscoverNAT runs the mapping and filtering tests against o.Server.
func DiscoverNAT(ctx context.Context, o NATOptions) (*NATResult, error) {
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	server, err := resolveServer(ctx, o.Server)
	if err != nil {
		return nil, err
	}
	if o.Listen == nil {
		o.Listen = func(network string) (*net.UDPConn, error) { return net.ListenUDP(network, nil) }
	}
	network := "udp4"
	if server.Addr().Is6() {
		network = "udp6"
	}
	res := &NATResult{Server: server}
	// Filtering first: until then nothing on this machine has sent to the
	// alternate address, so no NAT state of any kind lets it in early.
	if err := filteringTests(ctx, o, network, res); err != nil {
		return nil, err
	}
	if err := mappingTests(ctx, o, network, res); err != nil {
		return nil, err
	}
	return res, nil
}

// mappingTests is RFC 5780 section 4.3.
func mappingTests(ctx context.Context, o NATOptions, network string, res *NATResult) error {
	conn, err := o.Listen(network)
	if err != nil {
		return err
	}
	defer conn.Close()
	first, err := bindingTest(ctx, conn, res.Server, 0, o.Timeout)
	if err != nil {
		return fmt.Errorf("mapping test I (Binding to %s): %w", res.Server, err)
	}
	if !first.other.IsValid() {
		return ErrNoBehaviorDiscovery
	}
	res.Other, res.Mapped = first.other, first.mapped
	res.Local = localAddrPort(conn, res.Server)
	if res.Mapped == res.Local {
		res.NoNAT, res.Mapping = true, EndpointIndependent
		return nil
	}
	second, err := bindingTest(ctx, conn, netip.AddrPortFrom(res.Other.Addr(), res.Server.Port()), 0, o.Timeout)
	if err != nil {
		return fmt.Errorf("mapping test II (Binding to the alternate address): %w", err)
	}
	if second.mapped == res.Mapped {
		res.Mapping = EndpointIndependent
		return nil
	}
	third, err := bindingTest(ctx, conn, res.Other, 0, o.Timeout)
	if err != nil {
		return fmt.Errorf("mapping test III (Binding to the alternate address and port): %w", err)
	}
	res.Mapping = AddressAndPortDependent
	if third.mapped == second.mapped {
		res.Mapping = AddressDependent
	}
	return nil
}

// filteringTests is RFC 5780 section 4.4, on a socket that has sent
// nothing to the alternate address.
func filteringTests(ctx context.Context, o NATOptions, network string, res *NATResult) error {
	conn, err := o.Listen(network)
	if err != nil {
		return err
	}
	defer conn.Close()
	first, err := bindingTest(ctx, conn, res.Server, 0, o.Timeout)
	if err != nil {
		return fmt.Errorf("test I (Binding to %s): %w: is UDP to it blocked, or is it not a STUN server?", res.Server, err)
	}
	if !first.other.IsValid() {
		return ErrNoBehaviorDiscovery
	}
	_, err = bindingTest(ctx, conn, res.Server, changeIP|changePort, o.Timeout)
	switch {
	case err == nil:
		res.Filtering = EndpointIndependent
		return nil
	case !errors.Is(err, errNoAnswer):
		return fmt.Errorf("filtering test II (answer from the alternate address and port): %w", err)
	}
	_, err = bindingTest(ctx, conn, res.Server, changePort, o.Timeout)
	switch {
	case err == nil:
		res.Filtering = AddressDependent
	case errors.Is(err, errNoAnswer):
		res.Filtering = AddressAndPortDependent
	default:
		return fmt.Errorf("filtering test III (answer from the alternate port): %w", err)
	}
	return nil
}

// CHANGE-REQUEST flags (RFC 5780 section 7.2).
const (
	changeIP   = 0x04
	changePort = 0x02
)

var errNoAnswer = errors.New("no answer")

// bindingAnswer is what one Binding test learned.
type bindingAnswer struct {
	mapped, other netip.AddrPort
}

// bindingTest sends a Binding request (with CHANGE-REQUEST flags when
// set) to server from conn and waits up to timeout for the answer,
// retransmitting; errNoAnswer when none came.
func bindingTest(ctx context.Context, conn *net.UDPConn, server netip.AddrPort, flags byte, timeout time.Duration) (bindingAnswer, error) {
	setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
	if flags != 0 {
		setters = append(setters, changeRequest(flags))
	}
	req, err := stun.Build(append(setters, stun.Fingerprint)...)
	if err != nil {
		return bindingAnswer{}, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for rto := 250 * time.Millisecond; time.Now().Before(deadline); rto *= 2 {
		if _, err := conn.WriteToUDPAddrPort(req.Raw, server); err != nil {
			return bindingAnswer{}, err
		}
		wait := time.Now().Add(rto)
		if wait.After(deadline) {
			wait = deadline
		}
		_ = conn.SetReadDeadline(wait)
		ans, err := readAnswer(conn, req.TransactionID)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		return ans, err
	}
	return bindingAnswer{}, errNoAnswer
}

// changeRequest is a CHANGE-REQUEST attribute.
type changeRequest byte

func (c changeRequest) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChangeRequest, []byte{0, 0, 0, byte(c)})
	return nil
}

// readAnswer reads until the answer to transaction id arrives (from any
// address: a changed answer comes from the alternate), or the deadline.
func readAnswer(conn *net.UDPConn, id [stun.TransactionIDSize]byte) (bindingAnswer, error) {
	buf := make([]byte, 2048)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return bindingAnswer{}, err
		}
		m := &stun.Message{Raw: buf[:n]}
		if m.Decode() != nil || m.TransactionID != id || m.Type.Method != stun.MethodBinding {
			continue
		}
		if m.Type.Class == stun.ClassErrorResponse {
			var code stun.ErrorCodeAttribute
			_ = code.GetFrom(m)
			if code.Code == stun.CodeUnknownAttribute {
				return bindingAnswer{}, fmt.Errorf("%w (420 to CHANGE-REQUEST)", ErrNoBehaviorDiscovery)
			}
			return bindingAnswer{}, fmt.Errorf("error response %d %s", code.Code, code.Reason)
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(m); err != nil {
			return bindingAnswer{}, fmt.Errorf("answer without XOR-MAPPED-ADDRESS: %w", err)
		}
		ans := bindingAnswer{mapped: addrPortOf(xor.IP, xor.Port)}
		var other stun.MappedAddress
		if other.GetFromAs(m, stun.AttrOtherAddress) == nil {
			ans.other = addrPortOf(other.IP, other.Port)
		}
		return ans, nil
	}
}

func addrPortOf(ip net.IP, port int) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

// localAddrPort is conn's address. When conn is bound to the wildcard
// address, its IP is the source address the system chooses towards server,
// learnt by connecting a throwaway socket (which sends nothing).
func localAddrPort(conn *net.UDPConn, server netip.AddrPort) netip.AddrPort {
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	ip := local.Addr().Unmap()
	if ip.IsUnspecified() {
		if c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server)); err == nil {
			ip = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
			_ = c.Close()
		}
	}
	return netip.AddrPortFrom(ip, local.Port())
}

// resolveServer resolves host:port to one address.
func resolveServer(ctx context.Context, server string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolving %s: %w", host, err)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), nil
}

// MappingMeaning is what a mapping behaviour means for a WebRTC call.
func (b Behavior) MappingMeaning() string {
	switch b {
	case EndpointIndependent:
		return "your public address stays the same whoever you talk to: direct (peer-to-peer) connections can work"
	case AddressDependent:
		return "your public address changes with each peer's address: direct connections will often fail; calls will need TURN"
	default:
		return "your public address changes with each peer's address and port: direct connections will mostly fail; calls will need TURN"
	}
}

// FilteringMeaning is what a filtering behaviour means for a WebRTC call.
func (b Behavior) FilteringMeaning() string {
	switch b {
	case EndpointIndependent:
		return "anyone may send to your public address once you have used it: direct connections work easily"
	case AddressDependent:
		return "only addresses you have sent to may answer: ICE's connectivity checks open the way, so direct connections usually work"
	default:
		return "only the exact address and port you sent to may answer: direct connections work only if the other side's mapping is endpoint-independent; otherwise calls need TURN"
	}
}

// Verdict sums up a result for a WebRTC call.
func (r *NATResult) Verdict() string {
	switch {
	case r.NoNAT && r.Filtering == EndpointIndependent:
		return "no NAT and no filtering firewall: direct connections will work"
	case r.NoNAT:
		return "no NAT, but a firewall that lets in only answers: direct connections work when ICE's checks open the way; keep a TURN server for peers behind worse NATs"
	case r.Mapping == EndpointIndependent && r.Filtering != AddressAndPortDependent:
		return "a friendly NAT: direct connections will usually work; keep a TURN server for peers behind worse ones"
	case r.Mapping == EndpointIndependent:
		return "direct connections will work with most peers, but not with peers whose NAT changes their address per destination: those calls need TURN"
	default:
		return "a NAT that changes your address per destination: direct connections will mostly fail; calls will need TURN"
	}
}
