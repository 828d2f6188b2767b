package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/pion/stun/v4"
)

// Signing: RFC 8489 section 9.2.4 wants every response to an authenticated
// request signed with MESSAGE-INTEGRITY, and a FINGERPRINT on responses to
// requests that had one. pion signs its success responses but none of its
// error responses (437, 486, 442, 440, 443, 403 ...) nor the ConnectionBind
// success, and it never adds a FINGERPRINT; RFC 6062 clients such as
// turnutils_uclient -T drop unsigned answers. The gate remembers the key of
// each request it verified (per client and transaction); answer() takes it
// back and signs what pion left unsigned.

// signerKey names one transaction of one client.
type signerKey struct {
	client netip.AddrPort
	id     [stun.TransactionIDSize]byte
}

// signer is how to sign the answer to one verified request.
type signer struct {
	key         []byte
	fingerprint bool // the request had a FINGERPRINT
	// answerEdits change pion's success response to an Allocate
	// (allocateAnswerEdits).
	answerEdits []attrEdit
	at          time.Time
}

// signerTTL bounds how long an unanswered transaction's key is kept. pion
// answers every request it handles at once; an entry is left behind only
// when it answers nothing.
const signerTTL = time.Minute

func signerKeyOf(client net.Addr, id []byte) (signerKey, bool) {
	_, ap, ok := addrPort(client)
	if !ok || len(id) != stun.TransactionIDSize {
		return signerKey{}, false
	}
	return signerKey{client: ap, id: [stun.TransactionIDSize]byte(id)}, true
}

// rememberSigner keeps the key m was verified with for its answer.
func (r *Relay) rememberSigner(client net.Addr, m *stun.Message, key []byte) {
	if k, ok := signerKeyOf(client, m.TransactionID[:]); ok {
		r.signers.Store(k, signer{key: key, fingerprint: m.Contains(stun.AttrFingerprint),
			answerEdits: allocateAnswerEdits(m), at: timeNow()})
	}
}

// signAnswer is answer()'s hook: it signs pion's answer b to client when
// the gate verified the request.
func (r *Relay) signAnswer(b []byte, client net.Addr) []byte {
	if !isSTUNResponse(b) {
		return b // data to the client (ChannelData, Data indications) costs only this check
	}
	k, ok := signerKeyOf(client, b[8:stunHeaderSize])
	if !ok {
		return b
	}
	v, ok := r.signers.LoadAndDelete(k)
	if !ok {
		return b
	}
	s := v.(signer)
	if len(s.answerEdits) > 0 {
		b = r.editAllocateAnswer(b, s.key, s.answerEdits)
	}
	return signResponse(b, s.key, s.fingerprint)
}

// allocateAnswerEdits are the changes RFC 8656 section 7.2 asks of pion's
// success response to the Allocate m: an ADDRESS-ERROR-CODE 440 for IPv6
// to a dual Allocate, as the RFC allows a server that allocates only the
// IPv4 address (pion allocates one relay socket, of one family, per
// allocation; docs/pion-upstream.md, 9), and no RESERVATION-TOKEN where
// EVEN-PORT does not ask for a reservation (its R bit clear; pion reserves
// either way).
func allocateAnswerEdits(m *stun.Message) []attrEdit {
	if m.Type.Method != stun.MethodAllocate {
		return nil
	}
	var edits []attrEdit
	if m.Contains(attrAdditionalAddressFamily) {
		value := append([]byte{familyIPv6, 0, 4, 40}, "Address Family not Supported"...)
		edits = append(edits, attrEdit{from: attrAddressErrorCode, to: stun.RawAttribute{Type: attrAddressErrorCode, Value: value}})
	}
	if v, err := m.Get(stun.AttrEvenPort); err == nil && len(v) > 0 && v[0]&evenPortReserve == 0 {
		edits = append(edits, attrEdit{from: stun.AttrReservationToken}) // removed
	}
	return edits
}

// evenPortReserve is the R bit of EVEN-PORT: reserve port+1.
const evenPortReserve = 0x80

// editAllocateAnswer applies edits to pion's Allocate success response b
// and re-signs it with key (signResponse adds the FINGERPRINT). A
// RESERVATION-TOKEN it removes releases the socket held for it.
func (r *Relay) editAllocateAnswer(b []byte, key []byte, edits []attrEdit) []byte {
	if len(b) < stunHeaderSize || binary.BigEndian.Uint16(b) != allocateSuccessType {
		return b
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return b
	}
	if token, err := m.Get(stun.AttrReservationToken); err == nil &&
		slices.ContainsFunc(edits, func(e attrEdit) bool { return e.from == stun.AttrReservationToken && e.to.Type == 0 }) {
		r.reservations.release(string(token))
	}
	out, ok := resigned(m, key, edits)
	if !ok {
		return b
	}
	return out
}

// sweepSigners drops keys of transactions pion never answered.
func (r *Relay) sweepSigners(now time.Time) {
	r.signers.Range(func(k, v any) bool {
		if now.Sub(v.(signer).at) > signerTTL {
			r.signers.Delete(k)
		}
		return true
	})
}

// isSTUNResponse reports whether b is a STUN success or error response.
func isSTUNResponse(b []byte) bool {
	return len(b) >= stunHeaderSize && b[0]&0xc0 == 0 && binary.BigEndian.Uint16(b)&0x0100 != 0 &&
		binary.BigEndian.Uint32(b[4:]) == magicCookie
}

// signResponse adds MESSAGE-INTEGRITY (with key) and, when fingerprint is
// set, FINGERPRINT to the response b where they are missing. 401 and 438
// stay unsigned: they say the credentials or the nonce failed (RFC 8489
// section 9.2.4). b is returned unchanged when nothing is missing.
func signResponse(b []byte, key []byte, fingerprint bool) []byte {
	hasMI := findAttributeOK(b, stun.AttrMessageIntegrity)
	hasFP := findAttributeOK(b, stun.AttrFingerprint)
	switch {
	case hasMI && (hasFP || !fingerprint):
		return b // the common case: a success response pion signed
	case hasFP:
		return b // nothing may follow a FINGERPRINT
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return b
	}
	if m.Type.Class == stun.ClassErrorResponse {
		var code stun.ErrorCodeAttribute
		if code.GetFrom(m) != nil || code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce {
			return b
		}
	}
	if !hasMI && stun.MessageIntegrity(key).AddTo(m) != nil {
		return b
	}
	if fingerprint && stun.Fingerprint.AddTo(m) != nil {
		return b
	}
	return m.Raw
}

func findAttributeOK(msg []byte, t stun.AttrType) bool {
	_, ok := findAttribute(msg, t)
	return ok
}

// Allocation lifetimes (RFC 8656 section 7.2): a requested lifetime is
// granted within [default, maximum].
const (
	defaultLifetime = 10 * time.Minute
	maxLifetime     = time.Hour
	// pionDefaultLifetime is pion's AllocationLifetime, which pion grants
	// for a LIFETIME of one hour or more and for none at all; it takes a
	// requested value only below one hour (docs/pion-upstream.md, 5). Set
	// to the maximum, it lets turnpike grant one hour; the gate writes the
	// default into the requests that carry no LIFETIME.
	pionDefaultLifetime = maxLifetime
)

// grantedLifetime is the lifetime RFC 8656 sections 7.2 and 7.3 grant for a
// requested one (0, a Refresh deleting the allocation, stays 0).
func grantedLifetime(requested time.Duration) time.Duration {
	if requested == 0 {
		return 0
	}
	return max(defaultLifetime, min(requested, maxLifetime))
}

// lifetimeEdit is the change to the LIFETIME of an Allocate or Refresh
// request that makes pion grant what the RFC says: a value pion takes as
// it is, or none for the maximum (pion's default). A request without
// LIFETIME gets the default written in. malformed reports a LIFETIME that
// is not 4 bytes long, which pion would take for none (400 is the answer).
func lifetimeEdit(m *stun.Message) (edit attrEdit, ok, malformed bool) {
	if m.Type.Method != stun.MethodAllocate && m.Type.Method != stun.MethodRefresh {
		return attrEdit{}, false, false
	}
	requested := defaultLifetime
	v, err := m.Get(stun.AttrLifetime)
	switch {
	case err == nil && len(v) == 4:
		requested = time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	case err == nil:
		return attrEdit{}, false, true
	}
	if requested >= pionDefaultLifetime {
		return attrEdit{}, false, false // pion grants its default, the maximum
	}
	granted := grantedLifetime(requested)
	if err == nil && granted == requested {
		return attrEdit{}, false, false
	}
	value := binary.BigEndian.AppendUint32(nil, uint32(granted/time.Second))
	return attrEdit{from: stun.AttrLifetime, to: stun.RawAttribute{Type: stun.AttrLifetime, Value: value}}, true, false
}

// attrEdit replaces the attribute of type from with to, or adds to when
// the message has no attribute of type from; a to of type 0 removes it.
type attrEdit struct {
	from stun.AttrType
	to   stun.RawAttribute
}

// rewrite applies edits to the request msg (decoded as m) in place and
// re-signs it with key. The message may grow into msg's spare capacity;
// the length in its header says by how much. It reports false, leaving msg
// as it is, when the result does not fit.
func rewrite(msg []byte, m *stun.Message, key []byte, edits []attrEdit) bool {
	if len(edits) == 0 {
		return true
	}
	out, ok := resigned(m, key, edits)
	if !ok || len(out) > cap(msg) {
		return false
	}
	copy(msg[:len(out)], out)
	return true
}

// resigned rebuilds m with edits applied, signed with key (and with a
// FINGERPRINT when m had one). Attributes after MESSAGE-INTEGRITY other
// than FINGERPRINT are ignored by receivers (RFC 8489 section 14.5) and
// dropped.
func resigned(m *stun.Message, key []byte, edits []attrEdit) ([]byte, bool) {
	out := &stun.Message{TransactionID: m.TransactionID, Type: m.Type}
	out.WriteHeader()
	done := make([]bool, len(edits))
	for _, a := range m.Attributes {
		if a.Type == stun.AttrMessageIntegrity {
			break
		}
		i := slices.IndexFunc(edits, func(e attrEdit) bool { return e.from == a.Type })
		if i < 0 {
			out.Add(a.Type, a.Value)
			continue
		}
		if !done[i] && edits[i].to.Type != 0 {
			out.Add(edits[i].to.Type, edits[i].to.Value)
		}
		done[i] = true
	}
	for i, e := range edits {
		if !done[i] && e.to.Type != 0 {
			out.Add(e.to.Type, e.to.Value)
		}
	}
	if stun.MessageIntegrity(key).AddTo(out) != nil {
		return nil, false
	}
	if m.Contains(stun.AttrFingerprint) && stun.Fingerprint.AddTo(out) != nil {
		return nil, false
	}
	return out.Raw, true
}

// hiddenIntegrityType is what hideIntegrity renames MESSAGE-INTEGRITY to: an
// unassigned comprehension-optional type, which pion skips.
const hiddenIntegrityType = stun.AttrType(0xBFF0)

// hideIntegrity renames the MESSAGE-INTEGRITY attribute of msg in place, so
// that pion sees a request without credentials and answers it as RFC 8489
// section 9.2.4 asks for a failed one: 401 with REALM and a NONCE it will
// accept on the retry. pion answers failed credentials with 400 and no
// NONCE, which clients cannot recover from.
func hideIntegrity(msg []byte) {
	if off, ok := attributeOffset(msg, stun.AttrMessageIntegrity); ok {
		binary.BigEndian.PutUint16(msg[off:], uint16(hiddenIntegrityType))
	}
}
