package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
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
		r.signers.Store(k, signer{key: key, fingerprint: m.Contains(stun.AttrFingerprint), at: timeNow()})
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
	return signResponse(b, s.key, s.fingerprint)
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
	// maxGrantedLifetime is one second below RFC 8656's maximum of one hour:
	// pion grants a requested lifetime only when it is below one hour and
	// answers one hour or more with the default (docs/pion-upstream.md).
	maxGrantedLifetime = time.Hour - time.Second
)

// grantedLifetime is the lifetime RFC 8656 sections 7.2 and 7.3 grant for a
// requested one (0, a Refresh deleting the allocation, stays 0).
func grantedLifetime(requested time.Duration) time.Duration {
	if requested == 0 {
		return 0
	}
	return max(defaultLifetime, min(requested, maxGrantedLifetime))
}

// clampLifetime rewrites the LIFETIME of an Allocate or Refresh request in
// place into the granted range and re-signs the request with key, so that
// pion grants what the RFC says. A request it cannot re-sign to the same
// length (attributes after MESSAGE-INTEGRITY) is left as it is.
func clampLifetime(msg []byte, m *stun.Message, key []byte) {
	if m.Type.Method != stun.MethodAllocate && m.Type.Method != stun.MethodRefresh {
		return
	}
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		return
	}
	requested := time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	granted := grantedLifetime(requested)
	if granted == requested {
		return
	}
	value := binary.BigEndian.AppendUint32(nil, uint32(granted/time.Second))
	if out, ok := resigned(m, stun.AttrLifetime, value, key); ok && len(out) == len(msg) {
		copy(msg, out)
	}
}

// resigned rebuilds m with the value of attribute t replaced, signed with
// key (and with a FINGERPRINT when m had one). Attributes after
// MESSAGE-INTEGRITY other than FINGERPRINT are ignored by receivers (RFC
// 8489 section 14.5) and dropped.
func resigned(m *stun.Message, t stun.AttrType, value, key []byte) ([]byte, bool) {
	out := &stun.Message{TransactionID: m.TransactionID, Type: m.Type}
	out.WriteHeader()
	for _, a := range m.Attributes {
		if a.Type == stun.AttrMessageIntegrity {
			break
		}
		if a.Type == t {
			out.Add(t, value)
			continue
		}
		out.Add(a.Type, a.Value)
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
