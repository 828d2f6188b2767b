package relay

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // the long-term key is MD5 by RFC 5389
	"crypto/sha1" //nolint:gosec // MESSAGE-INTEGRITY is HMAC-SHA1 by RFC 5389
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// The test vectors of RFC 5769, byte for byte as its figures print them,
// checked three ways: MESSAGE-INTEGRITY and FINGERPRINT recomputed here as
// RFC 5389 sections 15.4 and 15.5 define them (so the figures themselves
// are checked), by pion/stun (which the relay and pion/turn use for every
// integrity and fingerprint check), and through the relay's own code that
// reads them: framing, the throttle's integrity probe, key derivation and
// the rotation-key match.

// RFC 5769 section 2.1: a request with short-term credentials.
var rfc5769Request = mustHex(`
	00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
	80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
	00 24 00 04  6e 00 01 ff
	80 29 00 08  93 2f f9 b1  51 26 3b 36
	00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
	00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
	80 28 00 04  e5 7a 3b cf`)

// Section 2.2: a response with an IPv4 XOR-MAPPED-ADDRESS.
var rfc5769IPv4Response = mustHex(`
	01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
	80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
	00 20 00 08  00 01 a1 47  e1 12 a6 43
	00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
	80 28 00 04  c0 7d 4c 96`)

// Section 2.3: a response with an IPv6 XOR-MAPPED-ADDRESS.
var rfc5769IPv6Response = mustHex(`
	01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
	80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
	00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
	00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
	80 28 00 04  c8 fb 0b 4c`)

// Section 2.4: a request with long-term credentials (no FINGERPRINT).
var rfc5769LongTermRequest = mustHex(`
	00 01 00 60  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
	00 06 00 12  e3 83 9e e3  83 88 e3 83  aa e3 83 83  e3 82 af e3  82 b9 00 00
	00 15 00 1c  66 2f 2f 34  39 39 6b 39  35 34 64 36  4f 4c 33 34  6f 4c 39 46  53 54 76 79  36 34 73 41
	00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
	00 08 00 14  f6 70 24 65  6d d6 4a 3e  02 b8 e0 71  2e 85 c9 a2  8c a8 96 66`)

const (
	// rfc5769Password is the short-term password of sections 2.1-2.3.
	rfc5769Password = "VOkJxbRl1RmTxUk/WvJxBt"
	// Section 2.4: the username is U+30DE U+30C8 U+30EA U+30C3 U+30AF
	// U+30B9; the password "The<U+00AD>M<U+00AA>tr<U+2168>" is
	// "TheMatrIX" after SASLprep, which is the form the key is made from.
	// Neither the relay nor the operator applies SASLprep: a password is
	// used as given.
	rfc5769User     = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
	rfc5769Realm    = "example.org"
	rfc5769Nonce    = "f//499k954d6OL34oL9FSTvy64sA"
	rfc5769Prepared = "TheMatrIX"
)

// rfc5769Vector is one vector and the key its MESSAGE-INTEGRITY is made with.
type rfc5769Vector struct {
	name        string
	msg         []byte
	key         []byte
	fingerprint bool
}

func rfc5769Vectors() []rfc5769Vector {
	longTermKey := md5.Sum([]byte(rfc5769User + ":" + rfc5769Realm + ":" + rfc5769Prepared)) //nolint:gosec
	return []rfc5769Vector{
		{"2.1 request", rfc5769Request, []byte(rfc5769Password), true},
		{"2.2 IPv4 response", rfc5769IPv4Response, []byte(rfc5769Password), true},
		{"2.3 IPv6 response", rfc5769IPv6Response, []byte(rfc5769Password), true},
		{"2.4 long-term request", rfc5769LongTermRequest, longTermKey[:], false},
	}
}

// attrOffset is where the first attribute of type t starts in msg, or -1.
func attrOffset(msg []byte, t stun.AttrType) int {
	for off := stunHeaderSize; off+4 <= len(msg); {
		if stun.AttrType(binary.BigEndian.Uint16(msg[off:])) == t {
			return off
		}
		off += 4 + (int(binary.BigEndian.Uint16(msg[off+2:]))+3)&^3
	}
	return -1
}

// withLength is msg[:end] with its length field set as if the message
// ended at length bytes.
func withLength(msg []byte, end, length int) []byte {
	b := bytes.Clone(msg[:end])
	binary.BigEndian.PutUint16(b[2:], uint16(length-stunHeaderSize))
	return b
}

// rfcIntegrity recomputes MESSAGE-INTEGRITY as RFC 5389 section 15.4 says:
// HMAC-SHA1 over the message up to the attribute, with the length field
// counting the attribute itself (and nothing after it).
func rfcIntegrity(msg, key []byte) (want, got []byte) {
	off := attrOffset(msg, stun.AttrMessageIntegrity)
	if off < 0 {
		return nil, nil
	}
	mac := hmac.New(sha1.New, key)
	mac.Write(withLength(msg, off, off+4+sha1.Size))
	return mac.Sum(nil), msg[off+4 : off+4+sha1.Size]
}

// rfcFingerprint recomputes FINGERPRINT as RFC 5389 section 15.5 says:
// CRC-32 of the message up to the attribute, XOR 0x5354554e.
func rfcFingerprint(msg []byte) (want, got uint32) {
	off := attrOffset(msg, stun.AttrFingerprint)
	if off < 0 {
		return 0, 1
	}
	return crc32.ChecksumIEEE(withLength(msg, off, off+8)) ^ 0x5354554e, binary.BigEndian.Uint32(msg[off+4:])
}

// TestRFC5769Integrity: every vector's MESSAGE-INTEGRITY and FINGERPRINT
// are what RFC 5389 defines, pion/stun agrees, and a single flipped byte
// or a wrong key makes both fail.
func TestRFC5769Integrity(t *testing.T) {
	for _, v := range rfc5769Vectors() {
		t.Run(v.name, func(t *testing.T) {
			if want, got := rfcIntegrity(v.msg, v.key); want == nil || !hmac.Equal(want, got) {
				t.Errorf("MESSAGE-INTEGRITY %x, RFC 5389 computes %x", got, want)
			}
			if v.fingerprint {
				if want, got := rfcFingerprint(v.msg); want != got {
					t.Errorf("FINGERPRINT %08x, RFC 5389 computes %08x", got, want)
				}
			}
			if err := pionChecks(v.msg, v.key, v.fingerprint); err != nil {
				t.Errorf("pion/stun: %v", err)
			}

			if pionChecks(v.msg, []byte("wrong key"), false) == nil {
				t.Error("pion/stun accepts the vector with a wrong key")
			}
			// A byte of the transaction ID, and one of the attribute before MESSAGE-INTEGRITY.
			for _, at := range []int{10, attrOffset(v.msg, stun.AttrMessageIntegrity) - 5} {
				flipped := bytes.Clone(v.msg)
				flipped[at] ^= 0x01
				if stun.MessageIntegrity(v.key).Check(decoded(t, flipped)) == nil {
					t.Errorf("MESSAGE-INTEGRITY still checks with byte %d flipped", at)
				}
				if v.fingerprint && stun.Fingerprint.Check(decoded(t, flipped)) == nil {
					t.Errorf("FINGERPRINT still checks with byte %d flipped", at)
				}
			}
		})
	}
}

// pionChecks checks msg's MESSAGE-INTEGRITY with key and, if asked, its
// FINGERPRINT, as pion/stun does.
func pionChecks(msg, key []byte, fingerprint bool) error {
	m := &stun.Message{Raw: bytes.Clone(msg)}
	if err := m.Decode(); err != nil {
		return err
	}
	if err := stun.MessageIntegrity(key).Check(m); err != nil {
		return err
	}
	if fingerprint {
		return stun.Fingerprint.Check(m)
	}
	return nil
}

func decoded(t *testing.T, msg []byte) *stun.Message {
	t.Helper()
	m := &stun.Message{Raw: bytes.Clone(msg)}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRFC5769Attributes: the attributes decode to the values section 2
// states.
func TestRFC5769Attributes(t *testing.T) {
	mapped := map[string]netip.AddrPort{
		"2.2 IPv4 response": netip.MustParseAddrPort("192.0.2.1:32853"),
		"2.3 IPv6 response": netip.MustParseAddrPort("[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
	}
	for name, want := range mapped {
		vec := rfc5769IPv4Response
		if want.Addr().Is6() {
			vec = rfc5769IPv6Response
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(decoded(t, vec)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := netip.AddrFromSlice(xor.IP)
		if netip.AddrPortFrom(got.Unmap(), uint16(xor.Port)) != want {
			t.Errorf("%s: XOR-MAPPED-ADDRESS %s, want %s", name, xor, want)
		}
	}

	m := decoded(t, rfc5769Request)
	var user stun.Username
	var software stun.Software
	if user.GetFrom(m) != nil || user.String() != "evtj:h6vY" || software.GetFrom(m) != nil || software.String() != "STUN test client" {
		t.Errorf("2.1: USERNAME %q, SOFTWARE %q", user, software)
	}
	m = decoded(t, rfc5769LongTermRequest)
	var realm stun.Realm
	var nonce stun.Nonce
	if user.GetFrom(m) != nil || user.String() != rfc5769User || realm.GetFrom(m) != nil || realm.String() != rfc5769Realm ||
		nonce.GetFrom(m) != nil || nonce.String() != rfc5769Nonce {
		t.Errorf("2.4: USERNAME %q, REALM %q, NONCE %q", user, realm, nonce)
	}
}

// TestRFC5769RelayPaths runs the vectors through the relay's own code: the
// requests pass framing as whole datagrams, the throttle sees their
// MESSAGE-INTEGRITY, the long-term key the relay derives for section 2.4's
// user checks its integrity, and the rotation-key match picks that key
// among two.
func TestRFC5769RelayPaths(t *testing.T) {
	for _, v := range rfc5769Vectors() {
		if kind, reason := checkDatagram(v.msg); kind != frameSTUN || reason != "" {
			t.Errorf("%s: framing refuses it: %q", v.name, reason)
		}
		if !hasIntegrity(v.msg) {
			t.Errorf("%s: the throttle does not see its MESSAGE-INTEGRITY", v.name)
		}
	}

	key := turn.GenerateAuthKey(rfc5769User, rfc5769Realm, rfc5769Prepared)
	if err := stun.MessageIntegrity(key).Check(decoded(t, rfc5769LongTermRequest)); err != nil {
		t.Fatalf("the key derived for %q does not check section 2.4: %v", rfc5769User, err)
	}

	// Two valid keys for the user (a password rotating): the one that
	// signed the request is remembered for authenticate.
	creds, err := newCredentials(&config.Credentials{Version: config.Version, Generation: 1, Users: []config.User{
		{Username: rfc5769User, Key: hex.EncodeToString(turn.GenerateAuthKey(rfc5769User, rfc5769Realm, "old password"))},
		{Username: rfc5769User, Key: hex.EncodeToString(key)},
	}}, rfc5769Realm)
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{}
	client := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 32853}
	r.matchRotationKey(&state{creds: creds}, decoded(t, rfc5769LongTermRequest), client)
	k, _ := keyForRequest(client, rfc5769User)
	got, ok := r.rotationKeys.Load(k)
	if !ok || !bytes.Equal(got.(matchedKey).key, key) {
		t.Errorf("rotation-key match remembered %v (found %v), want the key of %q", got, ok, rfc5769Prepared)
	}
}
