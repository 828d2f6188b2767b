package relay

import (
	"encoding/binary"
	"net"
)

// The request gate: every STUN message a client sends passes here, whole
// and framed (clientconn.go), before pion handles it. Framing has already
// refused any message type whose top two bits are not zero, so the type
// read here is the type pion executes: what the gate counts is what runs.

// gate is the relay's gateFunc.
func (r *Relay) gate(msg []byte, client, local net.Addr, _ func([]byte)) (forward bool) {
	if r.throttled(msg, client) {
		return false
	}
	if isSTUNRequest(msg) {
		r.inspectRequest(msg, client, local)
	}
	return true
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
