package relay

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/pion/stun/v4"
)

// The request gate: every STUN message a client sends passes here, whole
// and framed (clientconn.go), before pion handles it. Framing has already
// refused any message type whose top two bits are not zero, so the type
// read here is the type pion executes: what the gate counts is what runs.
//
// The gate is where turnpike makes the engine's answers conform to the
// RFCs without changing the engine (docs/relay.md, "Conformance"):
//
//   - It verifies MESSAGE-INTEGRITY itself. A request whose credentials fail
//     reaches pion with its MESSAGE-INTEGRITY hidden, so pion answers what
//     RFC 8489 section 9.2.4 asks for: 401 with REALM and a fresh NONCE
//     (pion itself answers 400 without a NONCE).
//   - It answers what pion would get wrong or leave unanswered: 437 without
//     an allocation, 441 for another user's allocation, 400 for an unknown
//     method, a malformed XOR-PEER-ADDRESS or a channel below 0x4000,
//     400 for TCP allocations pion must not grant, 443
//     and 403 for peers, checking every peer before any is installed.
//   - It drops a request whose FINGERPRINT is wrong (RFC 8489 section 7.3).
//   - It clamps LIFETIME into the range the RFC grants and re-signs the
//     request with the key it verified.
//   - It redeems a RESERVATION-TOKEN from turnpike's own reservations
//     (reservations.go).
//   - It remembers the key of each verified request, so that answer()
//     signs pion's error responses too (signing.go).

// Reasons the gate answers or drops a request itself; the "reason" label of
// turnpike_relay_requests_refused_total.
const (
	refusedBadFingerprint = "bad_fingerprint"   // dropped unanswered
	refusedUnknownMethod  = "unknown_method"    // 400
	refusedBadRequest     = "bad_request"       // 400: a malformed attribute
	refusedNoAllocation   = "no_allocation"     // 437
	refusedWrongUser      = "wrong_credentials" // 441
	refusedTransport      = "transport"         // 400 on a TCP Allocate
	refusedFamily         = "family_mismatch"   // 443
	refusedPeer           = "peer_denied"       // 403 (also in peers_denied_total)
	refusedNoReservation  = "no_reservation"    // 508: an unknown RESERVATION-TOKEN
)

var requestRefusedReasons = []string{refusedBadFingerprint, refusedUnknownMethod, refusedBadRequest,
	refusedNoAllocation, refusedWrongUser, refusedTransport, refusedFamily, refusedPeer, refusedNoReservation, refusedNotBinding}

// gate is the request gate without an address generator to steer: what
// tests call. Listeners use gateFor.
func (r *Relay) gate(msg []byte, client, local net.Addr, reply func([]byte)) (forward bool) {
	return r.gateOn(nil, msg, client, local, reply)
}

// gateFor is the gateFunc of a listener whose allocations gen opens the
// relay sockets of: the gate tells it which reserved socket an Allocate
// redeems (reservations.go).
func (r *Relay) gateFor(gen *relayAddressGenerator) gateFunc {
	return func(msg []byte, client, local net.Addr, reply func([]byte)) bool {
		return r.gateOn(gen, msg, client, local, reply)
	}
}

// gateOn is the gate. It may rewrite msg in place, growing it into its
// spare capacity (see hideIntegrity and requestEdits).
func (r *Relay) gateOn(gen *relayAddressGenerator, msg []byte, client, local net.Addr, reply func([]byte)) (forward bool) {
	if r.throttled(msg, client) {
		return false
	}
	if isSendIndication(msg) {
		return r.gateSend(msg)
	}
	if !isSTUNRequest(msg) {
		return true
	}
	// Capacity capped at the length: pion/stun appends to Raw (checking
	// MESSAGE-INTEGRITY computes the HMAC into Raw's spare capacity), and
	// past msg lies the next frame of a stream.
	m := &stun.Message{Raw: msg[:len(msg):len(msg)]}
	if m.Decode() != nil {
		return true // pion refuses it as well
	}
	if m.Contains(stun.AttrFingerprint) && stun.Fingerprint.Check(m) != nil {
		r.refuseRequest(refusedBadFingerprint, client)
		return false
	}
	if !knownRequestMethod(m.Type.Method) {
		r.refuseRequest(refusedUnknownMethod, client)
		reply(errorAnswer(m, stun.CodeBadRequest, nil))
		return false
	}
	if m.Type.Method == stun.MethodBinding {
		return true
	}
	k, haveKey := keyFor(client, local)
	if haveKey {
		r.inspectRequest(m, k)
	}
	cred := r.verifyIntegrity(m, client)
	switch {
	case cred.failed:
		hideIntegrity(msg)
		return true
	case cred.key == nil || !haveKey:
		return true // pion asks for credentials (401) or refuses a malformed request (400)
	}
	if code, reason := r.checkRequest(m, k, cred.username); code != 0 {
		r.refuseRequest(reason, client)
		reply(errorAnswer(m, code, cred.key))
		return false
	}
	edits, code, reason := r.requestEdits(gen, m, k, cred.username)
	if code != 0 {
		r.refuseRequest(reason, client)
		reply(errorAnswer(m, code, cred.key))
		return false
	}
	rewrite(msg, m, cred.key, edits)
	r.rememberSigner(client, m, cred.key)
	return true
}

// requestEdits are the changes the gate makes to an authenticated request
// of username for allocation k before pion handles it: LIFETIME (signing.go)
// and a RESERVATION-TOKEN redeemed (reservations.go). A code other than 0
// is the error to answer instead, and reason the one to count.
func (r *Relay) requestEdits(gen *relayAddressGenerator, m *stun.Message, k allocKey, username string) ([]attrEdit, stun.ErrorCode, string) {
	var edits []attrEdit
	e, ok, malformed := lifetimeEdit(m)
	switch {
	case malformed:
		return nil, stun.CodeBadRequest, refusedBadRequest
	case ok:
		edits = append(edits, e)
	}
	if m.Type.Method != stun.MethodAllocate {
		return edits, 0, ""
	}
	user := userIDOf(username)
	if gen != nil {
		gen.dropClaims(user) // one left by an Allocate pion refused before opening a socket
	}
	if m.Contains(stun.AttrReservationToken) {
		e, code := r.redeemToken(gen, m, k, user)
		switch {
		case code != 0:
			return nil, code, refusedNoReservation
		case e.from != 0:
			edits = append(edits, e)
		}
	}
	return edits, 0, ""
}

// knownRequestMethod reports whether pion handles requests of method.
func knownRequestMethod(method stun.Method) bool {
	switch method {
	case stun.MethodBinding, stun.MethodAllocate, stun.MethodRefresh, stun.MethodCreatePermission,
		stun.MethodChannelBind, stun.MethodConnect, stun.MethodConnectionBind:
		return true
	}
	return false
}

// checkRequest applies the checks pion gets wrong to an authenticated
// request of username for allocation k. It returns 0 to let pion handle it,
// else the error code to answer and the reason to count.
func (r *Relay) checkRequest(m *stun.Message, k allocKey, username string) (stun.ErrorCode, string) {
	switch m.Type.Method {
	case stun.MethodAllocate:
		return checkAllocate(m, k.network)
	case stun.MethodConnectionBind:
		return 0, "" // arrives on a new connection, which has no allocation
	}
	alloc, exists := r.allocs.lookup(k)
	switch {
	case !exists:
		return stun.CodeAllocMismatch, refusedNoAllocation
	case alloc.user != userIDOf(username):
		return stun.CodeWrongCredentials, refusedWrongUser
	}
	switch m.Type.Method {
	case stun.MethodCreatePermission, stun.MethodChannelBind, stun.MethodConnect:
		return r.checkPeers(m, alloc.v6)
	}
	return 0, ""
}

// Transport protocol numbers of REQUESTED-TRANSPORT.
const (
	protoTCP = 6
	protoUDP = 17
)

// checkAllocate refuses with 400 the TCP allocations RFC 6062 section 5.1
// rules out: one asked for over UDP or DTLS (a TCP allocation needs a TCP
// or TLS control connection), and one carrying EVEN-PORT,
// RESERVATION-TOKEN or DONT-FRAGMENT, which only mean something for UDP.
// pion grants both. It refuses the dual allocations RFC 8656 section 7.2
// does too, which pion does not know.
func checkAllocate(m *stun.Message, network string) (stun.ErrorCode, string) {
	if !validDualAllocate(m) {
		return stun.CodeBadRequest, refusedBadRequest
	}
	v, err := m.Get(stun.AttrRequestedTransport)
	if err != nil || len(v) != 4 || v[0] != protoTCP {
		return 0, "" // pion answers a missing or other transport itself
	}
	if network != "tcp" || m.Contains(stun.AttrEvenPort) || m.Contains(stun.AttrReservationToken) || m.Contains(stun.AttrDontFragment) {
		return stun.CodeBadRequest, refusedTransport
	}
	return 0, ""
}

// ADDITIONAL-ADDRESS-FAMILY and ADDRESS-ERROR-CODE (RFC 8656 section 18).
// coturn and its clients still use the drafts' 0x8032 and 0x8033, which
// RFC 8656 left unassigned: the relay ignores those, as any unknown
// comprehension-optional attribute.
const (
	attrAdditionalAddressFamily = stun.AttrType(0x8000)
	attrAddressErrorCode        = stun.AttrType(0x8001)
)

// The values of the address family attributes.
const (
	familyIPv4 = 1
	familyIPv6 = 2
)

// validDualAllocate applies RFC 8656 section 7.2, steps 5, 6 and 9, to an
// Allocate's ADDITIONAL-ADDRESS-FAMILY: IPv6 is its only valid value, and
// it excludes REQUESTED-ADDRESS-FAMILY and RESERVATION-TOKEN.
func validDualAllocate(m *stun.Message) bool {
	v, err := m.Get(attrAdditionalAddressFamily)
	if err != nil {
		return true
	}
	return len(v) == 4 && v[0] == familyIPv6 &&
		!m.Contains(stun.AttrRequestedAddressFamily) && !m.Contains(stun.AttrReservationToken)
}

// Channel numbers a client may bind. RFC 8656 section 12 narrowed them to
// 0x4000-0x4FFF, but RFC 5766 clients (coturn's among them) still bind up
// to 0x7FFF, so the relay keeps accepting those, as framing does.
const (
	minChannel = 0x4000
	maxChannel = 0x7FFF
)

// checkPeers checks every XOR-PEER-ADDRESS of a CreatePermission,
// ChannelBind or Connect before pion installs any: pion installs the
// permissions of a CreatePermission one by one and answers 403 for a later
// peer after granting the earlier ones. v6 is the allocation's family.
func (r *Relay) checkPeers(m *stun.Message, v6 bool) (stun.ErrorCode, string) {
	if m.Type.Method == stun.MethodChannelBind {
		v, err := m.Get(stun.AttrChannelNumber)
		if err != nil || len(v) != 4 {
			return stun.CodeBadRequest, refusedBadRequest
		}
		if n := binary.BigEndian.Uint16(v); n < minChannel || n > maxChannel {
			return stun.CodeBadRequest, refusedBadRequest
		}
	}
	peers, ok := peerAddresses(m)
	if !ok {
		return stun.CodeBadRequest, refusedBadRequest
	}
	portMatters := m.Type.Method != stun.MethodCreatePermission
	for _, p := range peers {
		if portMatters && p.Port() == 0 {
			return stun.CodeBadRequest, refusedBadRequest
		}
	}
	for _, p := range peers {
		// The family as pion sees it: an IPv4-mapped address is IPv4.
		if p.Addr().Unmap().Is6() != v6 {
			return stun.CodePeerAddrFamilyMismatch, refusedFamily
		}
	}
	policy := r.current().policy
	for _, p := range peers {
		ok, reason := policy.check(p.Addr())
		if ok && portMatters {
			ok, reason = policy.checkPort(p) // a node address only on a relay port
		}
		if !ok {
			r.metrics.peersDenied.WithLabelValues(reason).Inc()
			r.rlog.info("peer-denied:"+reason, "peer denied", "peer", p.Addr().String(), "reason", reason)
			return stun.CodeForbidden, refusedPeer
		}
	}
	return 0, ""
}

// peerAddresses decodes every XOR-PEER-ADDRESS of m; ok is false when there
// is none or one is malformed.
func peerAddresses(m *stun.Message) (peers []netip.AddrPort, ok bool) {
	for _, a := range m.Attributes {
		if a.Type != stun.AttrXORPeerAddress {
			continue
		}
		p, ok := decodeXORAddress(a.Value, m.TransactionID)
		if !ok {
			return nil, false
		}
		peers = append(peers, p)
	}
	return peers, len(peers) > 0
}

// decodeXORAddress decodes an XOR-PEER-ADDRESS value (RFC 8489 section
// 14.2). Unlike pion it insists on the length the family implies: pion
// zero-pads an IPv6 address of 4 bytes into a different address.
func decodeXORAddress(v []byte, id [stun.TransactionIDSize]byte) (netip.AddrPort, bool) {
	if len(v) < 4 || v[0] != 0 {
		return netip.AddrPort{}, false
	}
	var size int
	switch v[1] {
	case 1:
		size = 4
	case 2:
		size = 16
	default:
		return netip.AddrPort{}, false
	}
	if len(v) != 4+size {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:]) ^ uint16(magicCookie>>16)
	var key [16]byte
	binary.BigEndian.PutUint32(key[:], magicCookie)
	copy(key[4:], id[:])
	var b [16]byte
	for i := range size {
		b[i] = v[4+i] ^ key[i]
	}
	if size == 4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), port), true
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), port), true
}

// gateSend drops a Send indication whose XOR-PEER-ADDRESS is malformed or
// names port 0. Send indications are data: this reads the attributes in
// place, without decoding the message.
func (r *Relay) gateSend(msg []byte) bool {
	v, found := findAttribute(msg, stun.AttrXORPeerAddress)
	if !found {
		return true // pion drops it
	}
	p, ok := decodeXORAddress(v, [stun.TransactionIDSize]byte(msg[8:stunHeaderSize]))
	if !ok || p.Port() == 0 {
		r.metrics.requestsRefused.WithLabelValues(refusedBadRequest).Inc()
		return false
	}
	return true
}

// findAttribute returns the value of the first attribute of type t in the
// STUN message msg, reading it in place.
func findAttribute(msg []byte, t stun.AttrType) ([]byte, bool) {
	off, ok := attributeOffset(msg, t)
	if !ok {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(msg[off+2:]))
	return msg[off+4 : off+4+n], true
}

// attributeOffset returns where the first attribute of type t starts in the
// STUN message msg (a whole message: framing checked its length).
func attributeOffset(msg []byte, t stun.AttrType) (int, bool) {
	end := min(len(msg), stunHeaderSize+int(binary.BigEndian.Uint16(msg[2:4])))
	for off := stunHeaderSize; off+4 <= end; {
		n := int(binary.BigEndian.Uint16(msg[off+2:]))
		if off+4+n > end {
			return 0, false
		}
		if stun.AttrType(binary.BigEndian.Uint16(msg[off:])) == t {
			return off, true
		}
		off += 4 + (n+3)&^3
	}
	return 0, false
}

// refuseRequest counts a request the gate answered or dropped itself.
func (r *Relay) refuseRequest(reason string, client net.Addr) {
	r.metrics.requestsRefused.WithLabelValues(reason).Inc()
	r.rlog.info("request:"+reason, "request refused at the gate", "reason", reason, "client", addrString(client))
}

// errorAnswer is the gate's own error response to m: signed with key when
// the request was authenticated (RFC 8489 section 9.2.4), with FINGERPRINT
// when the request had one. extra are attributes to add after ERROR-CODE
// (UNKNOWN-ATTRIBUTES).
func errorAnswer(m *stun.Message, code stun.ErrorCode, key []byte, extra ...stun.Setter) []byte {
	setters := []stun.Setter{&stun.Message{TransactionID: m.TransactionID},
		stun.NewType(m.Type.Method, stun.ClassErrorResponse), code}
	setters = append(setters, extra...)
	if key != nil {
		setters = append(setters, stun.MessageIntegrity(key))
	}
	if m.Contains(stun.AttrFingerprint) {
		setters = append(setters, stun.Fingerprint)
	}
	out, err := stun.Build(setters...)
	if err != nil {
		return nil
	}
	return out.Raw
}

// isSTUNRequest reports whether b is a STUN request (class bits 0b00) with
// the magic cookie.
func isSTUNRequest(b []byte) bool {
	if len(b) < stunHeaderSize || b[0]&0xc0 != 0 {
		return false
	}
	t := binary.BigEndian.Uint16(b)
	return t&0x0110 == 0 && binary.BigEndian.Uint32(b[4:]) == magicCookie
}

// sendIndicationType is the message type of a Send indication.
var sendIndicationType = stun.NewType(stun.MethodSend, stun.ClassIndication).Value()

func isSendIndication(b []byte) bool {
	return len(b) >= stunHeaderSize && binary.BigEndian.Uint16(b) == sendIndicationType &&
		binary.BigEndian.Uint32(b[4:]) == magicCookie
}
