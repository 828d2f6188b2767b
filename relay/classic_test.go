package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/pion/stun/v4"
)

// classicID is a 128-bit RFC 3489 transaction ID; its first 4 bytes are not
// the magic cookie.
var classicID = mustHex("0102030405060708090a0b0c0d0e0f10")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// classicRequest builds an RFC 3489 Binding request with the given
// attributes (type and value, each value a multiple of 4 bytes long).
func classicRequest(id []byte, attrs ...classicAttr) []byte {
	b := make([]byte, 4, 64)
	binary.BigEndian.PutUint16(b, 0x0001)
	b = append(b, id...)
	for _, a := range attrs {
		b = binary.BigEndian.AppendUint16(b, a.t)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.v)))
		b = append(b, a.v...)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20))
	return b
}

type classicAttr struct {
	t uint16
	v []byte
}

func changeRequest(flags byte) classicAttr { return classicAttr{0x0003, []byte{0, 0, 0, flags}} }

func TestIsClassicBindingRequest(t *testing.T) {
	rfc5389 := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	allocate := classicRequest(classicID)
	allocate[1] = 0x03
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"classic Binding request", classicRequest(classicID), true},
		{"RFC 5389 Binding request", rfc5389, false},
		{"classic Allocate", allocate, false},
		{"classic Binding response", append([]byte{0x01, 0x01, 0, 0}, classicID...), false},
	} {
		if got := isClassicBindingRequest(tc.b); got != tc.want {
			t.Errorf("%s: isClassicBindingRequest = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestClassicAnswer checks the answers byte for byte, as RFC 3489 section
// 11 lays them out.
func TestClassicAnswer(t *testing.T) {
	client := netip.MustParseAddrPort("192.0.2.7:40000")      // 0x9c40
	local := netip.MustParseAddrPort("198.51.100.1:3478")     // 0x0d96
	client6 := netip.MustParseAddrPort("[2001:db8::7]:40000") // family 2
	wildcard := netip.MustParseAddrPort("0.0.0.0:3478")
	id := "0102030405060708090a0b0c0d0e0f10"
	mapped := "0001 0008 0001 9c40 c0000207"
	source := "0004 0008 0001 0d96 c6336401"
	// 420, reason "Unknown Attribute   " (20 bytes).
	errorCode := "0009 0018 0000 0414" + hex.EncodeToString([]byte(classicUnknownReason))
	for _, tc := range []struct {
		name          string
		req           []byte
		client, local netip.AddrPort
		want          string // hex; empty: dropped
		result        string
	}{
		{"plain", classicRequest(classicID), client, local,
			"0101 0018" + id + mapped + source, bindingAnswered},
		{"CHANGE-REQUEST without flags", classicRequest(classicID, changeRequest(0)), client, local,
			"0101 0018" + id + mapped + source, bindingAnswered},
		{"optional attribute ignored", classicRequest(classicID, classicAttr{0x8022, []byte("abcd")}), client, local,
			"0101 0018" + id + mapped + source, bindingAnswered},
		{"wildcard socket: no SOURCE-ADDRESS", classicRequest(classicID), client, wildcard,
			"0101 000c" + id + mapped, bindingAnswered},
		{"unknown local address: no SOURCE-ADDRESS", classicRequest(classicID), client, netip.AddrPort{},
			"0101 000c" + id + mapped, bindingAnswered},
		{"IPv6 client", classicRequest(classicID), client6, netip.AddrPort{},
			"0101 0018" + id + "0001 0014 0002 9c40 20010db8000000000000000000000007", bindingAnswered},
		// An odd list repeats its last type, to a multiple of 4 bytes.
		{"change IP", classicRequest(classicID, changeRequest(changeIPFlag)), client, local,
			"0111 0024" + id + errorCode + "000a 0004 0003 0003", bindingError},
		{"change port", classicRequest(classicID, changeRequest(changePortFlag)), client, local,
			"0111 0024" + id + errorCode + "000a 0004 0003 0003", bindingError},
		{"RESPONSE-ADDRESS", classicRequest(classicID, classicAttr{0x0002, mustHex("0001 0035 c0000209")}), client, local,
			"0111 0024" + id + errorCode + "000a 0004 0002 0002", bindingError},
		{"USERNAME and MESSAGE-INTEGRITY", classicRequest(classicID, classicAttr{0x0006, []byte("user")},
			classicAttr{0x0008, make([]byte, 20)}), client, local,
			"0111 0024" + id + errorCode + "000a 0004 0006 0008", bindingError},
		{"attribute past the end", mustHex("0001 0004" + id + "8022 0008"), client, local, "", bindingDropped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, result := classicAnswer(tc.req, tc.client, tc.local)
			if want := mustHex(tc.want); !bytes.Equal(got, want) || result != tc.result {
				t.Errorf("classicAnswer = %x, %q\n                 want %x, %q", got, result, want, tc.result)
			}
		})
	}
}
