package relay

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/pion/stun/v4"
)

// Classic STUN: Binding requests of RFC 3489 clients (old VoIP phones, game
// consoles, embedded stacks), which carry no magic cookie and a 128-bit
// transaction ID. pion answers only RFC 5389 messages, so the relay answers
// these itself, in front of the request gate, and they never reach pion.
// As RFC 5389 section 12.2 says, the answer carries the 16 bytes after the
// length field back unchanged and a plain (non-XOR) MAPPED-ADDRESS.
//
// The relay has no alternate address (RFC 5780), which decides the rest:
//
//   - SOURCE-ADDRESS (the address the answer leaves from) is added when the
//     socket is bound to a specific address; on a wildcard socket the
//     relay does not know it, and a wrong one is worse than none.
//   - CHANGED-ADDRESS is left out: it would name an address that changes
//     nothing. (coturn puts its own address there, which leads RFC 3489
//     clients to conclude things about their NAT from tests that never ran.)
//   - A CHANGE-REQUEST asking for another IP or port is refused with 420
//     Unknown Attribute, as RFC 5389 section 12.2 prescribes (and as coturn
//     answers without an alternate address). A CHANGE-REQUEST with neither
//     flag asks for nothing different and is answered; common clients
//     (Debian's stun, for one) put it in every request.
//   - RESPONSE-ADDRESS is refused with 420 too: sending the answer anywhere
//     but back to the sender would make the relay a reflector.
//
// Every other attribute up to 0x7FFF (RFC 3489's "mandatory to understand",
// USERNAME and MESSAGE-INTEGRITY included: the relay has no RFC 3489 shared
// secrets) is refused the same way; those from 0x8000 are ignored. No other
// RFC 3489 method is accepted: framing refuses every other message without
// the magic cookie.
//
// No amplification: an answer holds a 20-byte header and at most two
// addresses, or an error code and a list of the request's own attribute
// types, so it is never larger than the request by more than those.

// Message types and CHANGE-REQUEST flags of RFC 3489.
const (
	bindingRequestType  = 0x0001
	bindingResponseType = 0x0101
	bindingErrorType    = 0x0111

	changeIPFlag   = 0x04
	changePortFlag = 0x02
)

// classicUnknownReason is the reason phrase of the 420 answer. RFC 3489
// attribute lengths are multiples of 4 (it knows no padding), hence the
// trailing spaces: 20 bytes.
const classicUnknownReason = "Unknown Attribute   "

// Versions and results: the labels of turnpike_relay_stun_binding_total.
const (
	stunRFC3489 = "rfc3489"
	stunRFC5389 = "rfc5389"

	bindingAnswered = "answered" // a success response with the mapped address
	bindingError    = "error"    // an error response (420, see above)
	bindingDropped  = "dropped"  // nothing sent: malformed, or classic answers are off
)

var (
	stunVersions   = []string{stunRFC3489, stunRFC5389}
	bindingResults = []string{bindingAnswered, bindingError, bindingDropped}
)

// isClassicBindingRequest reports whether a message head (at least 8 bytes)
// is an RFC 3489 Binding request: type 0x0001 without the magic cookie.
func isClassicBindingRequest(head []byte) bool {
	return binary.BigEndian.Uint16(head) == bindingRequestType && binary.BigEndian.Uint32(head[4:8]) != magicCookie
}

// isBindingRequest reports whether msg is an RFC 5389 Binding request.
func isBindingRequest(msg []byte) bool {
	return binary.BigEndian.Uint16(msg) == bindingRequestType && binary.BigEndian.Uint32(msg[4:8]) == magicCookie
}

// bindingGate puts the Binding answers in front of the request gate next:
// classic requests are answered (or dropped) here, RFC 5389 ones that use
// behaviour discovery (behavior.go) too, and the other RFC 5389 ones are
// counted by what next decides; pion answers every one it is handed.
func (r *Relay) bindingGate(next gateFunc) gateFunc {
	return func(msg []byte, client, local net.Addr, reply func([]byte)) bool {
		if isClassicBindingRequest(msg) {
			r.answerClassic(msg, client, local, reply)
			return false
		}
		if !isBindingRequest(msg) {
			return next(msg, client, local, reply)
		}
		if r.answerBinding(msg, client, local, reply) {
			return false
		}
		forward := next(msg, client, local, reply)
		result := bindingAnswered
		if !forward {
			result = bindingDropped
		}
		r.metrics.stunBindings.WithLabelValues(stunRFC5389, result).Inc()
		return forward
	}
}

// answerClassic answers one classic Binding request, unless relay.yaml's
// stun.classic is off.
func (r *Relay) answerClassic(msg []byte, client, local net.Addr, reply func([]byte)) {
	dropped := func() { r.metrics.stunBindings.WithLabelValues(stunRFC3489, bindingDropped).Inc() }
	if !r.current().cfg.STUN.ClassicEnabled() {
		dropped()
		r.rlog.info("classic-off", "RFC 3489 Binding request dropped: stun.classic is off", "client", addrString(client))
		return
	}
	_, from, ok := addrPort(client)
	if !ok {
		dropped()
		return
	}
	_, to, _ := addrPort(local)
	answer, result := classicAnswer(msg, from, to)
	// Counted before it is sent, so that whoever sees the answer sees the count.
	r.metrics.stunBindings.WithLabelValues(stunRFC3489, result).Inc()
	if answer != nil {
		reply(answer)
	}
}

// classicAnswer is the answer to the classic Binding request req from
// client, received on local (zero or unspecified when unknown), and its
// result label. A nil answer means drop: the attributes do not parse.
func classicAnswer(req []byte, client, local netip.AddrPort) (answer []byte, result string) {
	unknown, ok := classicUnknownAttributes(req)
	if !ok {
		return nil, bindingDropped
	}
	id := req[4:stunHeaderSize]
	if len(unknown) > 0 {
		b := classicHeader(bindingErrorType, id)
		b = appendAttr(b, stun.AttrErrorCode, errorCodeValue(stun.CodeUnknownAttribute, classicUnknownReason))
		return appendAttr(b, stun.AttrUnknownAttributes, unknownAttributesValue(unknown)), bindingError
	}
	b := classicHeader(bindingResponseType, id)
	b = appendAttr(b, stun.AttrMappedAddress, addressValue(client))
	if local.Addr().IsValid() && !local.Addr().IsUnspecified() {
		b = appendAttr(b, stun.AttrSourceAddress, addressValue(local))
	}
	return b, bindingAnswered
}

// classicUnknownAttributes walks req's attributes and returns the types the
// relay cannot honour (see the top of this file); ok is false when an
// attribute runs past the message.
func classicUnknownAttributes(req []byte) (unknown []stun.AttrType, ok bool) {
	for b := req[stunHeaderSize:]; len(b) > 0; {
		if len(b) < 4 {
			return nil, false
		}
		t := stun.AttrType(binary.BigEndian.Uint16(b))
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if 4+n > len(b) {
			return nil, false
		}
		if t <= 0x7fff && !isPlainChangeRequest(t, b[4:4+n]) {
			unknown = append(unknown, t)
		}
		b = b[min(4+(n+3)&^3, len(b)):]
	}
	return unknown, true
}

// isPlainChangeRequest reports whether an attribute is a CHANGE-REQUEST
// that asks for neither another IP nor another port.
func isPlainChangeRequest(t stun.AttrType, v []byte) bool {
	return t == stun.AttrChangeRequest && len(v) == 4 && v[3]&(changeIPFlag|changePortFlag) == 0
}

// classicHeader starts a message of type msgType whose 16 bytes after the
// length field are id, as RFC 3489's transaction ID is.
func classicHeader(msgType uint16, id []byte) []byte {
	b := make([]byte, 4, stunHeaderSize+64)
	binary.BigEndian.PutUint16(b, msgType)
	return append(b, id...)
}

// appendAttr appends an attribute whose value length is a multiple of 4
// and updates the message length.
func appendAttr(msg []byte, t stun.AttrType, v []byte) []byte {
	msg = binary.BigEndian.AppendUint16(msg, uint16(t))
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(v)))
	msg = append(msg, v...)
	binary.BigEndian.PutUint16(msg[2:4], uint16(len(msg)-stunHeaderSize))
	return msg
}

// addressValue encodes an address attribute (MAPPED-ADDRESS, SOURCE-ADDRESS):
// a zero byte, the family (1 IPv4, 2 IPv6 as RFC 5389 added), port, address.
func addressValue(a netip.AddrPort) []byte {
	family := byte(1)
	if a.Addr().Is6() {
		family = 2
	}
	v := []byte{0, family, byte(a.Port() >> 8), byte(a.Port())}
	return append(v, a.Addr().AsSlice()...)
}

// errorCodeValue encodes ERROR-CODE: class and number, then the reason.
func errorCodeValue(code stun.ErrorCode, reason string) []byte {
	return append([]byte{0, 0, byte(code / 100), byte(code % 100)}, reason...)
}

// unknownAttributesValue encodes UNKNOWN-ATTRIBUTES. RFC 3489 wants the
// list's length a multiple of 4, so an odd list repeats its last type.
func unknownAttributesValue(types []stun.AttrType) []byte {
	if len(types)%2 == 1 {
		types = append(types, types[len(types)-1])
	}
	var v []byte
	for _, t := range types {
		v = binary.BigEndian.AppendUint16(v, uint16(t))
	}
	return v
}
