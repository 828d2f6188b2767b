package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// NAT behaviour discovery (RFC 5780), opt-in with relay.yaml's
// stun.behaviorDiscovery. A client learns its NAT's mapping and filtering
// behaviour by asking the same server from and to different addresses: the
// server has a primary and an alternate address (A1, A2) and a primary and
// an alternate port (P1, P2), and answers Binding requests on all four
// combinations. The primary is the first UDP listener on the bind address
// of a family; the alternate address is the first of
// stun.behaviorDiscovery.alternateAddresses this node can bind.
//
// The relay answers RFC 5389 Binding requests on those sockets itself, not
// pion, because the answer needs what pion does not send:
//
//   - MAPPED-ADDRESS next to XOR-MAPPED-ADDRESS (a generic ALG shows as a
//     difference between them), RESPONSE-ORIGIN (the address the answer
//     leaves from) and OTHER-ADDRESS (A2:P2 seen from A1:P1, and so on:
//     always both changed, whatever the request asked).
//   - CHANGE-REQUEST: the answer leaves from the socket with the other
//     address and/or port (RFC 5780 section 6.1, table 1).
//   - RESPONSE-PORT: the answer goes to that port of the requester's IP,
//     never to another IP. Port 0 is refused with 400.
//   - PADDING: the answer carries PADDING too, as the RFC requires, but
//     never more than makes the answer as long as the request (the RFC asks
//     for the MTU; that would make every small padded request an
//     amplifier). PADDING with RESPONSE-PORT is refused with 400.
//
// Without an alternate address (none given, none bindable on this node, or
// no specific bind address to be the primary) RFC 5780 section 6 rules: no
// OTHER-ADDRESS, and 420 to a CHANGE-REQUEST that asks for a change. The
// alternate port is then not opened at all: with one address it could only
// serve a "change port" test, which clients run only after an OTHER-ADDRESS.
// RESPONSE-ORIGIN, RESPONSE-PORT and PADDING still work.
//
// With behaviour discovery off, pion answers every RFC 5389 Binding
// request, and CHANGE-REQUEST (even one asking for nothing), RESPONSE-PORT
// and PADDING get its 420 Unknown Attribute, as comprehension-required
// attributes it does not know.
//
// The alternate sockets answer Binding requests and nothing else: every
// other datagram is dropped and counted (requests_refused_total{reason=
// "not_binding"}). They pass the same framing checks and auth throttle as
// the listener, and no TURN state is reachable through them.

// refusedNotBinding counts datagrams the alternate sockets drop: they only
// answer Binding requests.
const refusedNotBinding = "not_binding"

// behaviorRequest is what a Binding request asks of RFC 5780.
type behaviorRequest struct {
	changeIP, changePort bool
	responsePort         uint16
	hasResponsePort      bool
	hasPadding           bool
	hasFingerprint       bool
}

var errMalformedBehavior = errors.New("malformed RFC 5780 attribute")

// parseBehaviorRequest reads the RFC 5780 attributes of a decoded Binding
// request. CHANGE-REQUEST and RESPONSE-PORT must be 4 bytes long; a
// CHANGE-REQUEST with neither flag asks for nothing.
func parseBehaviorRequest(m *stun.Message) (behaviorRequest, error) {
	var q behaviorRequest
	for _, a := range m.Attributes {
		switch a.Type {
		case stun.AttrChangeRequest:
			if len(a.Value) != 4 {
				return q, errMalformedBehavior
			}
			q.changeIP = a.Value[3]&changeIPFlag != 0
			q.changePort = a.Value[3]&changePortFlag != 0
		case stun.AttrResponsePort:
			if len(a.Value) != 4 {
				return q, errMalformedBehavior
			}
			q.hasResponsePort = true
			q.responsePort = uint16(a.Value[0])<<8 | uint16(a.Value[1])
		case stun.AttrPadding:
			q.hasPadding = true
		case stun.AttrFingerprint:
			q.hasFingerprint = true
		}
	}
	return q, nil
}

// discoverySet is one family's behaviour discovery sockets, indexed
// [address][port] with 0 the primary and 1 the alternate. conns[0][0] is
// one of the listener's own sockets; without an alternate address only it
// is set.
type discoverySet struct {
	addrs [2]netip.Addr
	ports [2]uint16
	conns [2][2]*net.UDPConn
}

func (s *discoverySet) hasAlternate() bool { return s.addrs[1].IsValid() }

func (s *discoverySet) origin(a, p int) netip.AddrPort {
	return netip.AddrPortFrom(s.addrs[a], s.ports[p])
}

// discoveryPoint is one socket of a set: which address and port it is.
type discoveryPoint struct {
	set        *discoverySet
	addr, port int
}

// behaviorReply is the relay's answer to a Binding request on a discovery
// socket: what to send, from which socket, to where.
type behaviorReply struct {
	answer []byte
	from   *net.UDPConn // nil: from the receiving socket, to the sender
	to     netip.AddrPort
	result string
}

// answerBehavior decides the answer to the Binding request m of size
// reqLen from client, received at point. handled is false when pion should
// answer instead: point.set is nil, behaviour discovery is off on that
// socket.
func answerBehavior(m *stun.Message, reqLen int, client netip.AddrPort, point discoveryPoint) (reply behaviorReply, handled bool) {
	if point.set == nil {
		return behaviorReply{}, false
	}
	q, err := parseBehaviorRequest(m)
	switch {
	case err != nil:
		return behaviorReply{answer: errorAnswer(m, stun.CodeBadRequest, nil), result: bindingError}, true
	case q.hasPadding && q.hasResponsePort, q.hasResponsePort && q.responsePort == 0:
		return behaviorReply{answer: errorAnswer(m, stun.CodeBadRequest, nil), result: bindingError}, true
	case (q.changeIP || q.changePort) && !point.set.hasAlternate():
		return behaviorReply{answer: errorAnswer(m, stun.CodeUnknownAttribute, nil, stun.UnknownAttributes{stun.AttrChangeRequest}),
			result: bindingError}, true
	}
	s := point.set
	a, p := point.addr, point.port
	if q.changeIP {
		a ^= 1
	}
	if q.changePort {
		p ^= 1
	}
	var other netip.AddrPort
	if s.hasAlternate() {
		other = s.origin(point.addr^1, point.port^1)
	}
	to := client
	if q.hasResponsePort {
		to = netip.AddrPortFrom(client.Addr(), q.responsePort)
	}
	answer := bindingAnswer(m.TransactionID, client, s.origin(a, p), other, q, reqLen)
	return behaviorReply{answer: answer, from: s.conns[a][p], to: to, result: bindingAnswered}, true
}

// paddingAttrOverhead is PADDING's attribute header.
const paddingAttrOverhead = 4

// bindingAnswer is the success response: XOR-MAPPED-ADDRESS and
// MAPPED-ADDRESS of client, RESPONSE-ORIGIN, OTHER-ADDRESS when the server
// has an alternate, PADDING when asked (bounded by reqLen, see the top of
// this file) and FINGERPRINT when the request had one.
func bindingAnswer(id [stun.TransactionIDSize]byte, client, origin, other netip.AddrPort, q behaviorRequest, reqLen int) []byte {
	m := &stun.Message{TransactionID: id}
	m.WriteHeader()
	m.Type = stun.BindingSuccess
	m.WriteType()
	ip, port := net.IP(client.Addr().AsSlice()), int(client.Port())
	_ = (&stun.XORMappedAddress{IP: ip, Port: port}).AddTo(m)
	_ = (&stun.MappedAddress{IP: ip, Port: port}).AddTo(m)
	_ = (&stun.MappedAddress{IP: origin.Addr().AsSlice(), Port: int(origin.Port())}).AddToAs(m, stun.AttrResponseOrigin)
	if other.IsValid() {
		_ = (&stun.MappedAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())}).AddToAs(m, stun.AttrOtherAddress)
	}
	if q.hasPadding {
		size := len(m.Raw) + paddingAttrOverhead
		if q.hasFingerprint {
			size += fingerprintSize
		}
		m.Add(stun.AttrPadding, make([]byte, max(0, reqLen-size)&^3))
	}
	if q.hasFingerprint {
		_ = stun.Fingerprint.AddTo(m)
	}
	return m.Raw
}

// fingerprintSize is a FINGERPRINT attribute, header included.
const fingerprintSize = 8

// answerBinding answers an RFC 5389 Binding request when behaviour
// discovery decides it (see answerBehavior), and counts it; handled is
// false when pion should answer it (or, on an alternate socket, nobody).
// The answer leaves from the socket the request asked for, or through
// reply when that is the receiving socket.
func (r *Relay) answerBinding(msg []byte, client, local net.Addr, reply func([]byte)) (handled bool) {
	_, from, ok := addrPort(client)
	if !ok {
		return false
	}
	point := r.discoveryPointOf(local)
	if point.set == nil {
		return false
	}
	// The request gate's auth throttle, which answering here skips.
	if r.throttled(msg, client) {
		r.metrics.stunBindings.WithLabelValues(stunRFC5389, bindingDropped).Inc()
		return true
	}
	m := &stun.Message{Raw: append([]byte(nil), msg...)}
	if m.Decode() != nil {
		return false // pion refuses it as well
	}
	if m.Contains(stun.AttrFingerprint) && stun.Fingerprint.Check(m) != nil {
		return false // the gate drops it
	}
	// Unmapped: the client of an IPv4 socket is an IPv4 address.
	client4or6 := netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
	rep, handled := answerBehavior(m, len(msg), client4or6, point)
	if !handled {
		return false
	}
	// Counted before it is sent, so that whoever sees the answer sees the count.
	r.metrics.stunBindings.WithLabelValues(stunRFC5389, rep.result).Inc()
	if rep.from == nil {
		reply(rep.answer)
	} else {
		_, _ = rep.from.WriteToUDPAddrPort(rep.answer, rep.to)
	}
	return true
}

// discoveryPointOf is the behaviour discovery socket local is, or the zero
// point when behaviour discovery is off there. Only UDP: a TCP listener
// may have the same address and port as the primary.
func (r *Relay) discoveryPointOf(local net.Addr) discoveryPoint {
	if len(r.discovery) == 0 {
		return discoveryPoint{}
	}
	network, ap, ok := addrPort(local)
	if !ok || network != "udp" {
		return discoveryPoint{}
	}
	return r.discovery[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]
}

// openDiscovery opens the alternate sockets of stun.behaviorDiscovery next
// to the primaries (the first UDP listener's socket on each specific bind
// address) and records every socket's place in r.discovery. It returns the
// alternate sockets for pion to own (see discoveryConn).
func (r *Relay) openDiscovery(primaries map[netip.AddrPort]*net.UDPConn) ([]net.PacketConn, error) {
	bd := r.cfg.STUN.BehaviorDiscovery
	if bd == nil {
		return nil, nil
	}
	r.discovery = map[netip.AddrPort]discoveryPoint{}
	status := &config.BehaviorDiscoveryStatus{Addresses: []config.BehaviorDiscoveryAddress{}}
	defer r.discoveryStatus.Store(status)
	if len(primaries) == 0 {
		r.log.Warn("behaviour discovery without an alternate address: the relay binds all addresses, so it has no primary address; set addresses.bind or HOST_IP")
	}
	var conns []net.PacketConn
	for primary, conn := range primaries {
		s := &discoverySet{addrs: [2]netip.Addr{primary.Addr()}, ports: [2]uint16{primary.Port(), uint16(bd.AlternatePort)}}
		s.conns[0][0] = conn
		r.discovery[primary] = discoveryPoint{set: s}
		opened, err := r.openAlternates(s, bd.AlternateAddresses)
		conns = append(conns, opened...)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		entry := config.BehaviorDiscoveryAddress{Primary: primary.String()}
		if s.hasAlternate() {
			entry.Other = s.origin(1, 1).String()
		}
		status.Addresses = append(status.Addresses, entry)
		if !s.hasAlternate() {
			r.log.Warn("behaviour discovery without an alternate address: no other address of this family can be bound; CHANGE-REQUEST gets 420",
				"primary", primary.String(), "candidates", bd.AlternateAddresses)
			continue
		}
		for a := range 2 {
			for p := range 2 {
				r.discovery[s.origin(a, p)] = discoveryPoint{set: s, addr: a, port: p}
			}
		}
		r.log.Info("behaviour discovery (RFC 5780)", "primary", primary.String(), "other", s.origin(1, 1).String())
	}
	return conns, nil
}

// openAlternates binds the first candidate of s's family, other than the
// primary, that this node has, on both ports, and the primary address on
// the alternate port. A candidate the node does not have is skipped; any
// other failure (a port in use) is an error.
func (r *Relay) openAlternates(s *discoverySet, candidates []string) ([]net.PacketConn, error) {
	for _, c := range candidates {
		alt, err := netip.ParseAddr(c)
		if err != nil || alt == s.addrs[0] || familyOf(alt) != familyOf(s.addrs[0]) {
			continue
		}
		first, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(alt, s.ports[0])))
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			continue // another node's address
		}
		if err != nil {
			return nil, fmt.Errorf("behaviour discovery: %w", err)
		}
		s.addrs[1] = alt
		s.conns[1][0] = first
		opened := []net.PacketConn{r.discoveryConn(first)}
		for _, at := range [][2]int{{0, 1}, {1, 1}} {
			conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(s.origin(at[0], at[1])))
			if err != nil {
				s.addrs[1] = netip.Addr{}
				return opened, fmt.Errorf("behaviour discovery: %w", err)
			}
			s.conns[at[0]][at[1]] = conn
			opened = append(opened, r.discoveryConn(conn))
		}
		return opened, nil
	}
	return nil, nil
}

func closeAll(conns []net.PacketConn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// discoveryConn is an alternate behaviour discovery socket as pion sees
// it: its ReadFrom answers Binding requests itself and hands pion nothing,
// so pion's read loop only owns the socket's lifetime.
type discoveryConn struct {
	*net.UDPConn
	r *Relay
}

func (r *Relay) discoveryConn(c *net.UDPConn) *discoveryConn {
	setSocketBuffers(c, listenerBufferSize)
	return &discoveryConn{UDPConn: c, r: r}
}

func (c *discoveryConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFrom(p)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				c.r.edge.listenerDied(c.LocalAddr(), err)
			}
			return n, addr, err
		}
		c.r.serveAlternate(c.UDPConn, p[:n], addr)
	}
}

// serveAlternate handles one datagram on an alternate socket: the
// listener's framing checks, then a Binding answer (behind the auth
// throttle, see answerBinding); any other message is dropped.
func (r *Relay) serveAlternate(c *net.UDPConn, msg []byte, client net.Addr) {
	kind, reason := checkDatagram(msg)
	switch {
	case reason != "":
		r.edge.rejectFrame(reason)
		return
	case kind != frameSTUN || !isBindingRequest(msg):
		r.refuseRequest(refusedNotBinding, client)
		return
	}
	reply := func(b []byte) { _, _ = c.WriteTo(b, client) }
	if !r.answerBinding(msg, client, c.LocalAddr(), reply) {
		r.metrics.stunBindings.WithLabelValues(stunRFC5389, bindingDropped).Inc()
	}
}
