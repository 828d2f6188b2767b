package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// xorAddressValue encodes an XOR-PEER-ADDRESS value with the given family
// byte and raw address bytes, whatever their length.
func xorAddressValue(family byte, port uint16, addr []byte, id [stun.TransactionIDSize]byte) []byte {
	v := []byte{0, family, 0, 0}
	binary.BigEndian.PutUint16(v[2:], port^uint16(magicCookie>>16))
	key := binary.BigEndian.AppendUint32(nil, magicCookie)
	key = append(key, id[:]...)
	for i, b := range addr {
		v = append(v, b^key[i])
	}
	return v
}

// rawXORPeer adds an XOR-PEER-ADDRESS with any family byte and address
// bytes, to send malformed ones.
type rawXORPeer struct {
	family byte
	port   uint16
	addr   []byte
}

func (p rawXORPeer) AddTo(m *stun.Message) error {
	m.Add(stun.AttrXORPeerAddress, xorAddressValue(p.family, p.port, p.addr, m.TransactionID))
	return nil
}

func TestDecodeXORAddress(t *testing.T) {
	id := [stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	v4 := netip.MustParseAddr("203.0.113.7")
	v6 := netip.MustParseAddr("2001:db8::7")
	for _, tc := range []struct {
		name  string
		value []byte
		want  netip.AddrPort // zero: malformed
	}{
		{"IPv4", xorAddressValue(1, 3478, v4.AsSlice(), id), netip.AddrPortFrom(v4, 3478)},
		{"IPv6", xorAddressValue(2, 9, v6.AsSlice(), id), netip.AddrPortFrom(v6, 9)},
		{"port 0 decodes (callers decide)", xorAddressValue(1, 0, v4.AsSlice(), id), netip.AddrPortFrom(v4, 0)},
		{"IPv6 family with 4 address bytes", xorAddressValue(2, 9, v4.AsSlice(), id), netip.AddrPort{}},
		{"IPv4 family with 16 address bytes", xorAddressValue(1, 9, v6.AsSlice(), id), netip.AddrPort{}},
		{"unknown family", xorAddressValue(3, 9, v4.AsSlice(), id), netip.AddrPort{}},
		{"first byte not zero", append([]byte{1}, xorAddressValue(1, 9, v4.AsSlice(), id)[1:]...), netip.AddrPort{}},
		{"truncated", []byte{0, 1, 0}, netip.AddrPort{}},
	} {
		got, ok := decodeXORAddress(tc.value, id)
		if ok != tc.want.IsValid() || got != tc.want {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, ok, tc.want)
		}
	}
}

func TestGrantedLifetime(t *testing.T) {
	for _, tc := range []struct{ requested, want time.Duration }{
		{0, 0}, // Refresh deleting the allocation
		{30 * time.Second, 10 * time.Minute},
		{10 * time.Minute, 10 * time.Minute},
		{20 * time.Minute, 20 * time.Minute},
		{time.Hour, time.Hour},
		{2 * time.Hour, time.Hour},
	} {
		if got := grantedLifetime(tc.requested); got != tc.want {
			t.Errorf("grantedLifetime(%v) = %v, want %v", tc.requested, got, tc.want)
		}
	}
}

func TestCheckAllocate(t *testing.T) {
	transport := func(p byte) stun.Setter { return rawAttr(stun.AttrRequestedTransport, []byte{p, 0, 0, 0}) }
	for _, tc := range []struct {
		name    string
		network string
		attrs   []stun.Setter
		want    stun.ErrorCode
	}{
		{"UDP over UDP", "udp", []stun.Setter{transport(protoUDP)}, 0},
		{"UDP over TCP", "tcp", []stun.Setter{transport(protoUDP)}, 0},
		{"TCP over TCP", "tcp", []stun.Setter{transport(protoTCP)}, 0},
		{"TCP over UDP or DTLS", "udp", []stun.Setter{transport(protoTCP)}, stun.CodeBadRequest},
		{"TCP with EVEN-PORT", "tcp", []stun.Setter{transport(protoTCP), rawAttr(stun.AttrEvenPort, []byte{0x80})}, stun.CodeBadRequest},
		{"TCP with RESERVATION-TOKEN", "tcp", []stun.Setter{transport(protoTCP), rawAttr(stun.AttrReservationToken, make([]byte, 8))}, stun.CodeBadRequest},
		{"TCP with DONT-FRAGMENT", "tcp", []stun.Setter{transport(protoTCP), rawAttr(stun.AttrDontFragment, nil)}, stun.CodeBadRequest},
		{"UDP with EVEN-PORT", "udp", []stun.Setter{transport(protoUDP), rawAttr(stun.AttrEvenPort, []byte{0x80})}, 0},
		{"no transport: pion answers", "udp", nil, 0},
		{"dual", "udp", []stun.Setter{transport(protoUDP), rawAttr(attrAdditionalAddressFamily, []byte{2, 0, 0, 0})}, 0},
		{"dual asking IPv4", "udp", []stun.Setter{transport(protoUDP), rawAttr(attrAdditionalAddressFamily, []byte{1, 0, 0, 0})}, stun.CodeBadRequest},
		{"dual, malformed", "udp", []stun.Setter{transport(protoUDP), rawAttr(attrAdditionalAddressFamily, []byte{2})}, stun.CodeBadRequest},
		{"dual with REQUESTED-ADDRESS-FAMILY", "udp", []stun.Setter{transport(protoUDP),
			rawAttr(attrAdditionalAddressFamily, []byte{2, 0, 0, 0}), rawAttr(stun.AttrRequestedAddressFamily, []byte{2, 0, 0, 0})}, stun.CodeBadRequest},
		{"dual with RESERVATION-TOKEN", "udp", []stun.Setter{transport(protoUDP),
			rawAttr(attrAdditionalAddressFamily, []byte{2, 0, 0, 0}), rawAttr(stun.AttrReservationToken, make([]byte, 8))}, stun.CodeBadRequest},
	} {
		m := stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)}, tc.attrs...)...)
		if got, _ := checkAllocate(m, tc.network); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestSignResponse(t *testing.T) {
	key := []byte("0123456789abcdef")
	build := func(class stun.MessageClass, setters ...stun.Setter) []byte {
		base := []stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, class)}
		return stun.MustBuild(append(base, setters...)...).Raw
	}
	decode := func(b []byte) *stun.Message {
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		name          string
		in            []byte
		fingerprint   bool
		wantSigned    bool
		wantFP        bool
		wantUnchanged bool
	}{
		{"437 gets signed", build(stun.ClassErrorResponse, stun.CodeAllocMismatch), false, true, false, false},
		{"437 gets signed and a FINGERPRINT", build(stun.ClassErrorResponse, stun.CodeAllocMismatch), true, true, true, false},
		{"401 stays unsigned", build(stun.ClassErrorResponse, stun.CodeUnauthorized, stun.NewNonce("n")), true, false, false, true},
		{"438 stays unsigned", build(stun.ClassErrorResponse, stun.CodeStaleNonce, stun.NewNonce("n")), true, false, false, true},
		{"a signed success is kept", build(stun.ClassSuccessResponse, stun.MessageIntegrity(key)), false, true, false, true},
		{"a signed success gets a FINGERPRINT", build(stun.ClassSuccessResponse, stun.MessageIntegrity(key)), true, true, true, false},
		{"nothing goes after a FINGERPRINT", build(stun.ClassSuccessResponse, stun.Fingerprint), true, false, true, true},
	} {
		out := signResponse(tc.in, key, tc.fingerprint)
		m := decode(out)
		signed := m.Contains(stun.AttrMessageIntegrity) && stun.MessageIntegrity(key).Check(m) == nil
		fp := m.Contains(stun.AttrFingerprint) && stun.Fingerprint.Check(m) == nil
		if signed != tc.wantSigned || fp != tc.wantFP || bytes.Equal(out, tc.in) != tc.wantUnchanged {
			t.Errorf("%s: signed %v, FINGERPRINT %v, unchanged %v; want %v, %v, %v", tc.name,
				signed, fp, bytes.Equal(out, tc.in), tc.wantSigned, tc.wantFP, tc.wantUnchanged)
		}
	}
}

// TestGateLeavesTheNextFrameAlone: pion/stun computes a MESSAGE-INTEGRITY
// check into the spare capacity of the message buffer; the gate must not
// let it write past a message it has no reason to change (on a stream that
// was the next frame: turnutils_uclient -t lost every packet). The gate
// grows a message into that capacity only when it rewrites it.
func TestGateLeavesTheNextFrameAlone(t *testing.T) {
	tr := startRelay(t, baseConfig(t, t.TempDir()), baseCredentials())
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		rawAttr(stun.AttrRequestedTransport, []byte{protoUDP, 0, 0, 0}), lifetimeAttr(600),
		stun.NewUsername(testUser), stun.NewRealm(testRealm), stun.NewNonce("any"),
		stun.NewLongTermIntegrity(testUser, testRealm, testPassword))
	next := bytes.Repeat([]byte{0x40, 0x01, 0x00, 0x04}, 16)
	buf := append(append([]byte(nil), req.Raw...), next...)
	client := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tr.port}
	if !tr.gate(buf[:len(req.Raw)], client, local, func([]byte) { t.Error("the gate answered a valid Allocate") }) {
		t.Fatal("the gate dropped a valid Allocate")
	}
	if !bytes.Equal(buf[len(req.Raw):], next) {
		t.Fatal("the gate wrote past the message into the next frame")
	}
	if !bytes.Equal(buf[:len(req.Raw)], req.Raw) {
		t.Fatal("the gate changed a request it had no reason to change")
	}
}

// TestGatePeerAddresses: every XOR-PEER-ADDRESS is checked before any
// permission is installed; malformed ones and port 0 (where the port is
// used) are answered 400.
func TestGatePeerAddresses(t *testing.T) {
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	cfg.TCPRelay = true
	tr := startRelay(t, cfg, baseCredentials())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	c := dialRaw(t, "udp", addr, testUser, testPassword)
	c.mustAllocate(false)
	permissions := func() int { _, p, _ := tr.allocs.totals(); return p }

	// A public (allowed) peer first, a refused one second: 403, and the
	// first permission must not be installed.
	code := errorCode(c.request(stun.MethodCreatePermission,
		xorPeer(netip.AddrPortFrom(peerIP, 9)), xorPeer(netip.MustParseAddrPort("127.0.0.1:9"))))
	if code != int(stun.CodeForbidden) {
		t.Errorf("CreatePermission allowed+refused: %d, want 403", code)
	}
	if n := permissions(); n != 0 {
		t.Errorf("%d permissions installed by a refused CreatePermission", n)
	}

	// An IPv6-family address carrying 4 bytes: 400, nothing installed.
	bad := rawXORPeer{family: 2, port: 9, addr: peerIP.AsSlice()}
	if code := errorCode(c.request(stun.MethodCreatePermission, bad)); code != int(stun.CodeBadRequest) {
		t.Errorf("CreatePermission with a 4-byte IPv6 address: %d, want 400", code)
	}
	if n := permissions(); n != 0 {
		t.Errorf("%d permissions installed by a malformed CreatePermission", n)
	}

	// Port 0: fine for a permission (the port is not used), not for a
	// channel.
	if code := errorCode(c.request(stun.MethodCreatePermission, xorPeer(netip.AddrPortFrom(peerIP, 0)))); code != 0 {
		t.Errorf("CreatePermission to port 0: %d, want success", code)
	}
	if n := permissions(); n != 1 {
		t.Errorf("%d permissions after a good CreatePermission, want 1", n)
	}
	if code := c.channelBind(0x4001, netip.AddrPortFrom(peerIP, 0)); code != int(stun.CodeBadRequest) {
		t.Errorf("ChannelBind to port 0: %d, want 400", code)
	}

	// A Send indication to port 0 is dropped at the gate.
	before := counterValue(t, tr.Relay, "turnpike_relay_requests_refused_total", "reason", refusedBadRequest)
	c.send(netip.AddrPortFrom(peerIP, 0), []byte("to port 0"))
	waitFor(t, "the Send indication to port 0 to be refused", func() bool {
		return counterValue(t, tr.Relay, "turnpike_relay_requests_refused_total", "reason", refusedBadRequest) == before+1
	})

	// Connect to port 0 on a TCP allocation: 400.
	tc := dialRaw(t, "tcp", addr, testUser, testPassword)
	if code, _ := tc.allocate(protoTCP, false); code != 0 {
		t.Fatalf("TCP Allocate: %d", code)
	}
	if code := tc.connect(netip.AddrPortFrom(peerIP, 0)); code != int(stun.CodeBadRequest) {
		t.Errorf("Connect to port 0: %d, want 400", code)
	}
}

// BenchmarkGate measures what the gate costs per message on a running relay:
// authenticated requests (decode, key lookup, MESSAGE-INTEGRITY check, the
// allocation and peer checks, remembering the signer), a Send indication
// (read in place), and answer() on a ChannelData frame and on a signed
// success response. ChannelData never reaches the gate.
func BenchmarkGate(b *testing.B) {
	tr := startRelay(b, baseConfig(b, b.TempDir()), baseCredentials())
	client := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tr.port}
	k, _ := keyFor(client, local)
	tr.allocs.add(k, testUser, false) // requests get past the 437 check
	peer := netip.MustParseAddrPort("1.1.1.1:9")
	signed := func(method stun.Method, attrs ...stun.Setter) []byte {
		setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		setters = append(setters, stun.NewUsername(testUser), stun.NewRealm(testRealm), stun.NewNonce("nonce"),
			stun.NewLongTermIntegrity(testUser, testRealm, testPassword))
		return stun.MustBuild(setters...).Raw
	}
	restUser, restPassword := restCredentials(testSecret, testUser, time.Now().Add(time.Hour))
	restRefresh := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
		rawAttr(stun.AttrLifetime, []byte{0, 0, 2, 0x58}), stun.NewUsername(restUser), stun.NewRealm(testRealm),
		stun.NewNonce("nonce"), stun.NewLongTermIntegrity(restUser, testRealm, restPassword)).Raw
	messages := []struct {
		name string
		raw  []byte
	}{
		{"Refresh", signed(stun.MethodRefresh, rawAttr(stun.AttrLifetime, []byte{0, 0, 2, 0x58}))},
		{"Refresh without LIFETIME", signed(stun.MethodRefresh)}, // rewritten: LIFETIME 600 s written in
		{"Refresh REST user", restRefresh},
		{"CreatePermission", signed(stun.MethodCreatePermission, xorPeer(peer))},
		{"ChannelBind", signed(stun.MethodChannelBind, rawAttr(stun.AttrChannelNumber, []byte{0x40, 0x01, 0, 0}), xorPeer(peer))},
		{"Send indication", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer(peer), rawAttr(stun.AttrData, make([]byte, 160))).Raw},
	}
	for _, msg := range messages {
		b.Run("gate/"+msg.name, func(b *testing.B) {
			buf := make([]byte, len(msg.raw), 1600) // pion's buffer, which the gate may grow into
			for b.Loop() {
				copy(buf, msg.raw)
				if !tr.gate(buf, client, local, func([]byte) { b.Fatal("the gate answered") }) {
					b.Fatal("the gate dropped the message")
				}
			}
		})
	}
	channelData := append([]byte{0x40, 0x01, 0x00, 0xa0}, make([]byte, 160)...)
	success := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassSuccessResponse),
		stun.NewLongTermIntegrity(testUser, testRealm, testPassword)).Raw
	for _, a := range []struct {
		name string
		raw  []byte
	}{{"ChannelData", channelData}, {"signed success", success}} {
		b.Run("answer/"+a.name, func(b *testing.B) {
			for b.Loop() {
				tr.edge.answer(a.raw, client)
			}
		})
	}
}

// TestGateWrongCredentials: a request for an allocation made by another
// user (same client address and port) is answered 441, signed with the
// requester's key (RFC 8656 section 7.3; pion leaves it unanswered).
func TestGateWrongCredentials(t *testing.T) {
	tr := startRelay(t, baseConfig(t, t.TempDir()), baseCredentials())
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	bob, password := restCredentials(testSecret, "bob", time.Now().Add(time.Hour))
	c.username, c.integrity = bob, stun.NewLongTermIntegrity(bob, testRealm, password)
	res := c.signed(stun.MethodRefresh, false, lifetimeAttr(600))
	if code := errorCode(res); code != int(stun.CodeWrongCredentials) {
		t.Fatalf("Refresh of alice's allocation as %s: answer %d, want 441", bob, code)
	}
	c.wantSigned("441", res)
}
