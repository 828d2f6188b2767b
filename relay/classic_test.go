package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// classicID is a 128-bit RFC 3489 transaction ID; its first 4 bytes are not
// the magic cookie.
var classicID = mustHex("0102030405060708090a0b0c0d0e0f10")

// mustHex decodes hex written with any white space in between.
func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
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

// classicAttrs parses an RFC 3489 message's attributes by type.
func classicAttrs(t *testing.T, msg []byte) map[uint16][]byte {
	t.Helper()
	if len(msg) < stunHeaderSize || int(binary.BigEndian.Uint16(msg[2:]))+stunHeaderSize != len(msg) {
		t.Fatalf("answer %x: length field disagrees with the datagram", msg)
	}
	attrs := map[uint16][]byte{}
	for b := msg[stunHeaderSize:]; len(b) > 0; {
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n%4 != 0 || 4+n > len(b) {
			t.Fatalf("answer %x: attribute length %d", msg, n)
		}
		attrs[binary.BigEndian.Uint16(b)] = b[4 : 4+n]
		b = b[4+n:]
	}
	return attrs
}

// classicAddress decodes MAPPED-ADDRESS or SOURCE-ADDRESS.
func classicAddress(t *testing.T, v []byte) netip.AddrPort {
	t.Helper()
	if len(v) != 8 && len(v) != 20 {
		t.Fatalf("address attribute %x", v)
	}
	ip, _ := netip.AddrFromSlice(v[4:])
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(v[2:]))
}

// classicExchange sends req on conn (UDP, or a TCP stream) and returns the
// answer, checking its type and that it echoes the 16-byte ID.
func classicExchange(t *testing.T, conn net.Conn, req []byte, wantType uint16) []byte {
	t.Helper()
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 1500)
	n, err := io.ReadAtLeast(conn, buf, stunHeaderSize)
	if err == nil && n < stunHeaderSize+int(binary.BigEndian.Uint16(buf[2:])) {
		_, err = io.ReadFull(conn, buf[n:stunHeaderSize+int(binary.BigEndian.Uint16(buf[2:]))])
		n = stunHeaderSize + int(binary.BigEndian.Uint16(buf[2:]))
	}
	if err != nil {
		t.Fatalf("no answer to the classic Binding request: %v", err)
	}
	ans := buf[:n]
	if got := binary.BigEndian.Uint16(ans); got != wantType {
		t.Fatalf("answer type %#04x, want %#04x: %x", got, wantType, ans)
	}
	if !bytes.Equal(ans[4:20], req[4:20]) {
		t.Fatalf("answer ID %x, want %x", ans[4:20], req[4:20])
	}
	return ans
}

func randomClassicID(t *testing.T) []byte {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	id[0] = 0 // never the magic cookie
	return id
}

// TestClassicBindingOverTheWire: a classic request over UDP (IPv4 and
// IPv6) and TCP gets the sender's address, the relay's, and no more bytes
// than those two attributes take; CHANGE-REQUEST gets 420. All counted.
func TestClassicBindingOverTheWire(t *testing.T) {
	tr := startRelay(t, baseConfig(t, t.TempDir()), baseCredentials())
	hosts := []string{"127.0.0.1"}
	if haveIPv6() {
		hosts = append(hosts, "::1")
	}
	answered := 0
	for _, network := range []string{"udp", "tcp"} {
		for _, host := range hosts {
			t.Run(network+" "+host, func(t *testing.T) {
				server := net.JoinHostPort(host, strconv.Itoa(tr.port))
				conn, err := net.Dial(network, server)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				req := classicRequest(randomClassicID(t), changeRequest(0))
				ans := classicExchange(t, conn, req, bindingResponseType)
				answered++
				attrs := classicAttrs(t, ans)
				if got, want := classicAddress(t, attrs[0x0001]), addrPortOf(t, conn.LocalAddr()); got != want {
					t.Errorf("MAPPED-ADDRESS %s, want %s", got, want)
				}
				if got, want := classicAddress(t, attrs[0x0004]), netip.MustParseAddrPort(server); got != want {
					t.Errorf("SOURCE-ADDRESS %s, want %s", got, want)
				}
				if len(attrs) != 2 {
					t.Errorf("answer has %d attributes, want MAPPED-ADDRESS and SOURCE-ADDRESS only: %x", len(attrs), ans)
				}
				// No amplification: beyond the request's size, at most the
				// two address attributes (4-byte header each).
				addrLen := len(netip.MustParseAddr(host).AsSlice())
				if limit := len(req) + 2*(4+4+addrLen); len(ans) > limit {
					t.Errorf("answer is %d bytes for a %d-byte request; at most %d", len(ans), len(req), limit)
				}

				changeReq := classicRequest(randomClassicID(t), changeRequest(changeIPFlag|changePortFlag))
				refused := classicExchange(t, conn, changeReq, bindingErrorType)
				if v := classicAttrs(t, refused)[0x0009]; len(v) < 4 || int(v[2])*100+int(v[3]) != 420 {
					t.Errorf("answer to CHANGE-REQUEST: ERROR-CODE %x, want 420", v)
				}
				// ERROR-CODE with its reason, UNKNOWN-ATTRIBUTES with one type (twice).
				if limit := len(changeReq) + (4 + 4 + len(classicUnknownReason)) + (4 + 4); len(refused) > limit {
					t.Errorf("error answer is %d bytes for a %d-byte request; at most %d", len(refused), len(changeReq), limit)
				}
			})
		}
	}
	for result, want := range map[string]int{bindingAnswered: answered, bindingError: answered, bindingDropped: 0} {
		if got := counterValue(t, tr.Relay, "turnpike_relay_stun_binding_total", "version", stunRFC3489, "result", result); got != float64(want) {
			t.Errorf("stun_binding_total{version=rfc3489,result=%s} = %v, want %d", result, got, want)
		}
	}
}

func addrPortOf(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	_, ap, ok := addrPort(a)
	if !ok {
		t.Fatalf("address %v", a)
	}
	return ap
}

// TestClassicBindingTurnedOff: with stun.classic false a classic request
// is dropped and counted, while RFC 5389 requests are still answered; a
// reload turns it back on.
func TestClassicBindingTurnedOff(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	off := false
	cfg.STUN.Classic = &off
	tr := startRelay(t, cfg, baseCredentials())
	conn, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// The classic request goes first on the same socket, so the first
	// answer to arrive would be its own if it were answered: no waiting for
	// an absence.
	if _, err := conn.Write(classicRequest(randomClassicID(t))); err != nil {
		t.Fatal(err)
	}
	modern := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	ans := classicExchange(t, conn, modern.Raw, bindingResponseType)
	if binary.BigEndian.Uint32(ans[4:]) != magicCookie {
		t.Fatalf("the first answer is not the RFC 5389 one: %x", ans)
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_stun_binding_total", "version", stunRFC3489, "result", bindingDropped); got != 1 {
		t.Errorf("rfc3489 dropped = %v, want 1", got)
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_stun_binding_total", "version", stunRFC5389, "result", bindingAnswered); got != 1 {
		t.Errorf("rfc5389 answered = %v, want 1", got)
	}

	cfg.STUN.Classic = nil
	tr.writeFiles(t, cfg, nil)
	tr.Reload()
	classicExchange(t, conn, classicRequest(randomClassicID(t)), bindingResponseType)
}

var (
	stunClientPort   = regexp.MustCompile(`Opened port (\d+)`)
	stunClientMapped = regexp.MustCompile(`MappedAddress = ([0-9.]+:\d+)`)
	stunClientSource = regexp.MustCompile(`SourceAddress = ([0-9.]+:\d+)`)
	stunclientMapped = regexp.MustCompile(`UDP reflexive addr: ([0-9.]+:\d+)`)
)

// TestBindingClients: Debian's stun (RFC 3489) gets its mapped address
// from the relay; coturn's turnutils_stunclient and the relay's own STUN
// discovery client still get RFC 5389 answers.
func TestBindingClients(t *testing.T) {
	tr := startRelay(t, baseConfig(t, t.TempDir()), baseCredentials())
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))

	t.Run("Debian stun (RFC 3489)", func(t *testing.T) {
		out := runClient(t, lookTool(t, "stun"), server, "-v")
		port := stunClientPort.FindStringSubmatch(out)
		mapped := stunClientMapped.FindStringSubmatch(out)
		if port == nil || mapped == nil || mapped[1] != "127.0.0.1:"+port[1] {
			t.Fatalf("stun reported no mapped address 127.0.0.1:<its port>:\n%s", out)
		}
		if source := stunClientSource.FindStringSubmatch(out); source == nil || source[1] != server {
			t.Errorf("stun reported no SourceAddress %s:\n%s", server, out)
		}
		if got := counterValue(t, tr.Relay, "turnpike_relay_stun_binding_total", "version", stunRFC3489, "result", bindingAnswered); got < 1 {
			t.Errorf("rfc3489 answered = %v, want at least 1", got)
		}
	})
	t.Run("turnutils_stunclient (RFC 5389)", func(t *testing.T) {
		before := counterValue(t, tr.Relay, "turnpike_relay_stun_binding_total", "version", stunRFC5389, "result", bindingAnswered)
		out := runClient(t, lookTool(t, "turnutils_stunclient"), "-p", strconv.Itoa(tr.port), "127.0.0.1")
		if m := stunclientMapped.FindStringSubmatch(out); m == nil || !strings.HasPrefix(m[1], "127.0.0.1:") {
			t.Fatalf("turnutils_stunclient reported no reflexive address:\n%s", out)
		}
		if got := counterValue(t, tr.Relay, "turnpike_relay_stun_binding_total", "version", stunRFC5389, "result", bindingAnswered); got <= before {
			t.Errorf("rfc5389 answered stayed at %v", got)
		}
	})
	t.Run("STUN discovery client (RFC 5389)", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		got, err := stunLookup(ctx, netip.MustParseAddr("127.0.0.1"), server)
		if err != nil || got != netip.MustParseAddr("127.0.0.1") {
			t.Fatalf("stunLookup = %v, %v; want 127.0.0.1", got, err)
		}
	})
}

// runClient runs a client program to its end (bounded by a failure
// timeout) and returns its output.
func runClient(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) { // stun exits with its NAT type as the status
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish:\n%s", name, out)
	}
	return string(out)
}

// BenchmarkClassicAnswer is the cost of answering one classic request (the
// request Debian's stun sends: a CHANGE-REQUEST without flags).
func BenchmarkClassicAnswer(b *testing.B) {
	req := classicRequest(classicID, changeRequest(0))
	client := netip.MustParseAddrPort("192.0.2.7:40000")
	local := netip.MustParseAddrPort("198.51.100.1:3478")
	b.ReportAllocs()
	for b.Loop() {
		if _, result := classicAnswer(req, client, local); result != bindingAnswered {
			b.Fatal(result)
		}
	}
}
