package relay

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

func changeAttr(flags byte) stun.Setter {
	return rawAttr(stun.AttrChangeRequest, []byte{0, 0, 0, flags})
}

func responsePortAttr(port uint16) stun.Setter {
	return rawAttr(stun.AttrResponsePort, []byte{byte(port >> 8), byte(port), 0, 0})
}

func paddingAttr(n int) stun.Setter { return rawAttr(stun.AttrPadding, make([]byte, n)) }

func bindingRequest(t testing.TB, attrs ...stun.Setter) *stun.Message {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, attrs...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// addrAttr reads an address attribute (MAPPED-ADDRESS format) of m.
func addrAttr(t testing.TB, m *stun.Message, at stun.AttrType) netip.AddrPort {
	t.Helper()
	var a stun.MappedAddress
	if err := a.GetFromAs(m, at); err != nil {
		return netip.AddrPort{}
	}
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

// TestAnswerBehavior: which answer, from which socket, to where, for each
// kind of request (RFC 5780 section 6.1, table 1), with and without an
// alternate address and with behaviour discovery off.
func TestAnswerBehavior(t *testing.T) {
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	full := &discoverySet{addrs: [2]netip.Addr{a1, a2}, ports: [2]uint16{3478, 3479}}
	for a := range 2 {
		for p := range 2 {
			full.conns[a][p] = &net.UDPConn{} // identities only: nothing is sent
		}
	}
	single := &discoverySet{addrs: [2]netip.Addr{a1}, ports: [2]uint16{3478, 3479}}
	single.conns[0][0] = full.conns[0][0]
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	for _, tc := range []struct {
		name        string
		point       discoveryPoint
		attrs       []stun.Setter
		handled     bool
		code        stun.ErrorCode // 0: a success response
		from        [2]int         // socket of a success response
		to          netip.AddrPort
		origin      netip.AddrPort
		other       netip.AddrPort
		wantUnknown []stun.AttrType
	}{
		{name: "off, plain: pion answers", handled: false},
		{name: "off, change port: pion answers (420)", attrs: []stun.Setter{changeAttr(changePortFlag)}, handled: false},
		{name: "primary, plain", point: discoveryPoint{set: full}, handled: true, from: [2]int{0, 0}, to: client,
			origin: netip.AddrPortFrom(a1, 3478), other: netip.AddrPortFrom(a2, 3479)},
		{name: "primary, change IP", point: discoveryPoint{set: full}, attrs: []stun.Setter{changeAttr(changeIPFlag)}, handled: true,
			from: [2]int{1, 0}, to: client, origin: netip.AddrPortFrom(a2, 3478), other: netip.AddrPortFrom(a2, 3479)},
		{name: "primary, change port", point: discoveryPoint{set: full}, attrs: []stun.Setter{changeAttr(changePortFlag)}, handled: true,
			from: [2]int{0, 1}, to: client, origin: netip.AddrPortFrom(a1, 3479), other: netip.AddrPortFrom(a2, 3479)},
		{name: "alternate both, change both", point: discoveryPoint{set: full, addr: 1, port: 1}, attrs: []stun.Setter{changeAttr(changeIPFlag | changePortFlag)},
			handled: true, from: [2]int{0, 0}, to: client, origin: netip.AddrPortFrom(a1, 3478), other: netip.AddrPortFrom(a1, 3478)},
		{name: "response port", point: discoveryPoint{set: full}, attrs: []stun.Setter{responsePortAttr(5000)}, handled: true,
			from: [2]int{0, 0}, to: netip.AddrPortFrom(client.Addr(), 5000), origin: netip.AddrPortFrom(a1, 3478), other: netip.AddrPortFrom(a2, 3479)},
		{name: "response port 0", point: discoveryPoint{set: full}, attrs: []stun.Setter{responsePortAttr(0)}, handled: true, code: 400},
		{name: "padding with response port", point: discoveryPoint{set: full}, attrs: []stun.Setter{responsePortAttr(5000), paddingAttr(64)}, handled: true, code: 400},
		{name: "malformed change request", point: discoveryPoint{set: full}, attrs: []stun.Setter{rawAttr(stun.AttrChangeRequest, []byte{1})}, handled: true, code: 400},
		{name: "single address, plain", point: discoveryPoint{set: single}, handled: true, from: [2]int{0, 0}, to: client, origin: netip.AddrPortFrom(a1, 3478)},
		{name: "single address, change IP", point: discoveryPoint{set: single}, attrs: []stun.Setter{changeAttr(changeIPFlag)}, handled: true, code: 420,
			wantUnknown: []stun.AttrType{stun.AttrChangeRequest}},
		{name: "single address, response port", point: discoveryPoint{set: single}, attrs: []stun.Setter{responsePortAttr(5000)}, handled: true,
			from: [2]int{0, 0}, to: netip.AddrPortFrom(client.Addr(), 5000), origin: netip.AddrPortFrom(a1, 3478)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := bindingRequest(t, tc.attrs...)
			rep, handled := answerBehavior(req, len(req.Raw), client, tc.point)
			if handled != tc.handled {
				t.Fatalf("handled = %v, want %v", handled, tc.handled)
			}
			if !handled {
				return
			}
			ans := &stun.Message{Raw: rep.answer}
			if err := ans.Decode(); err != nil || ans.TransactionID != req.TransactionID {
				t.Fatalf("answer does not decode as the request's: %v", err)
			}
			if tc.code != 0 {
				var ec stun.ErrorCodeAttribute
				if ans.Type.Class != stun.ClassErrorResponse || ec.GetFrom(ans) != nil || ec.Code != tc.code {
					t.Fatalf("answer %v %v, want error %d", ans.Type, ec, tc.code)
				}
				if rep.from != nil {
					t.Error("an error answer must leave from the receiving socket")
				}
				var u stun.UnknownAttributes
				_ = u.GetFrom(ans)
				if len(u) != len(tc.wantUnknown) {
					t.Errorf("UNKNOWN-ATTRIBUTES %v, want %v", u, tc.wantUnknown)
				}
				return
			}
			if rep.from != tc.point.set.conns[tc.from[0]][tc.from[1]] || rep.to != tc.to {
				t.Errorf("sent from %p to %s, want socket %v to %s", rep.from, rep.to, tc.from, tc.to)
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(ans); err != nil || xor.String() != client.String() {
				t.Errorf("XOR-MAPPED-ADDRESS %v (%v), want %s", xor, err, client)
			}
			if got := addrAttr(t, ans, stun.AttrMappedAddress); got != client {
				t.Errorf("MAPPED-ADDRESS %s, want %s", got, client)
			}
			if got := addrAttr(t, ans, stun.AttrResponseOrigin); got != tc.origin {
				t.Errorf("RESPONSE-ORIGIN %s, want %s", got, tc.origin)
			}
			if got := addrAttr(t, ans, stun.AttrOtherAddress); got != tc.other {
				t.Errorf("OTHER-ADDRESS %s, want %s", got, tc.other)
			}
		})
	}
}

// TestBindingAnswerPadding: a padded request gets PADDING back, and the
// answer is never longer than the request, however small the padding.
func TestBindingAnswerPadding(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	origin := netip.MustParseAddrPort("192.0.2.1:3478")
	other := netip.MustParseAddrPort("192.0.2.2:3479")
	for _, pad := range []int{0, 4, 40, 100, 1400} {
		for _, fp := range []bool{false, true} {
			setters := []stun.Setter{paddingAttr(pad)}
			if fp {
				setters = append(setters, stun.Fingerprint)
			}
			req := bindingRequest(t, setters...)
			q, err := parseBehaviorRequest(req)
			if err != nil {
				t.Fatal(err)
			}
			ans := &stun.Message{Raw: bindingAnswer(req.TransactionID, client, origin, other, q, len(req.Raw))}
			if err := ans.Decode(); err != nil {
				t.Fatal(err)
			}
			if !ans.Contains(stun.AttrPadding) {
				t.Errorf("padding %d: the answer has no PADDING", pad)
			}
			// The answer without padding, plus an empty PADDING, is the
			// least it can be; past that it never outgrows the request.
			if limit := max(len(req.Raw), bindingAnswerSize(fp)+paddingAttrOverhead); len(ans.Raw) > limit {
				t.Errorf("padding %d, fingerprint %v: answer %d bytes for a %d-byte request", pad, fp, len(ans.Raw), len(req.Raw))
			}
			if fp && stun.Fingerprint.Check(ans) != nil {
				t.Errorf("padding %d: answer's FINGERPRINT is wrong", pad)
			}
		}
	}
}

// bindingAnswerSize is an IPv4 answer without PADDING: header, four
// addresses, FINGERPRINT when asked for.
func bindingAnswerSize(fingerprint bool) int {
	n := stunHeaderSize + 4*(4+8)
	if fingerprint {
		n += fingerprintSize
	}
	return n
}

// behaviorRelay starts a relay on 127.0.0.1 with behaviour discovery, its
// alternate address alt (127.0.0.2 exists on Linux's loopback without
// configuration) and a free alternate port.
func behaviorRelay(t *testing.T, alternates ...string) (tr *testRelay, altPort int) {
	t.Helper()
	var cfg *config.Relay
	for {
		// testutil.FreePort checks 127.0.0.1 only; the alternate address
		// needs both ports too.
		cfg = baseConfig(t, t.TempDir())
		altPort = testutil.FreePort(t)
		if freeUDP("127.0.0.2", cfg.Listeners[0].Port) && freeUDP("127.0.0.2", altPort) {
			break
		}
	}
	cfg.Addresses.Bind = []string{"127.0.0.1"}
	cfg.STUN.BehaviorDiscovery = &config.BehaviorDiscovery{AlternatePort: altPort, AlternateAddresses: alternates}
	return startRelay(t, cfg, baseCredentials()), altPort
}

func freeUDP(host string, port int) bool {
	c, err := net.ListenPacket("udp4", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// udpExchange sends req from conn to server and returns the answer and
// where it came from, or nil after wait.
func udpExchange(t *testing.T, conn *net.UDPConn, server netip.AddrPort, req []byte, wait time.Duration) (*stun.Message, netip.AddrPort) {
	t.Helper()
	if _, err := conn.WriteToUDPAddrPort(req, server); err != nil {
		t.Fatal(err)
	}
	return readAnswer(t, conn, wait)
}

func readAnswer(t *testing.T, conn *net.UDPConn, wait time.Duration) (*stun.Message, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil {
		t.Fatalf("answer does not decode: %v", err)
	}
	return m, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestBehaviorDiscoveryOverTheWire: the relay answers on all four
// address and port combinations, from the socket each CHANGE-REQUEST asks
// for, to RESPONSE-PORT on the requester's IP, and drops anything but
// Binding requests on the alternate sockets.
func TestBehaviorDiscoveryOverTheWire(t *testing.T) {
	tr, altPort := behaviorRelay(t, "192.0.2.99", "127.0.0.2")
	a1, a2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	p1, p2 := uint16(tr.port), uint16(altPort)
	sock := func(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }
	conn := listenLoopback(t)
	client := netip.AddrPortFrom(a1, uint16(conn.LocalAddr().(*net.UDPAddr).Port))
	for _, tc := range []struct {
		to    netip.AddrPort
		flags byte
		from  netip.AddrPort
		other netip.AddrPort
	}{
		{sock(a1, p1), 0, sock(a1, p1), sock(a2, p2)},
		{sock(a1, p1), changeIPFlag, sock(a2, p1), sock(a2, p2)},
		{sock(a1, p1), changePortFlag, sock(a1, p2), sock(a2, p2)},
		{sock(a1, p1), changeIPFlag | changePortFlag, sock(a2, p2), sock(a2, p2)},
		{sock(a2, p1), 0, sock(a2, p1), sock(a1, p2)},
		{sock(a2, p2), changeIPFlag | changePortFlag, sock(a1, p1), sock(a1, p1)},
		{sock(a1, p2), changePortFlag, sock(a1, p1), sock(a2, p1)},
	} {
		req := bindingRequest(t, changeAttr(tc.flags), stun.Fingerprint)
		ans, from := udpExchange(t, conn, tc.to, req.Raw, ioTimeout)
		if ans == nil {
			t.Fatalf("to %s with flags %#x: no answer", tc.to, tc.flags)
		}
		if from != tc.from || addrAttr(t, ans, stun.AttrResponseOrigin) != tc.from {
			t.Errorf("to %s with flags %#x: answer from %s, RESPONSE-ORIGIN %s; want %s", tc.to, tc.flags, from, addrAttr(t, ans, stun.AttrResponseOrigin), tc.from)
		}
		if got := addrAttr(t, ans, stun.AttrOtherAddress); got != tc.other {
			t.Errorf("to %s: OTHER-ADDRESS %s, want %s", tc.to, got, tc.other)
		}
		if got := addrAttr(t, ans, stun.AttrMappedAddress); got != client {
			t.Errorf("to %s: MAPPED-ADDRESS %s, want %s", tc.to, got, client)
		}
	}

	want := config.BehaviorDiscoveryAddress{Primary: sock(a1, p1).String(), Other: sock(a2, p2).String()}
	if bd := relayStatus(t, tr).BehaviorDiscovery; bd == nil || len(bd.Addresses) != 1 || bd.Addresses[0] != want {
		t.Errorf("/status behaviorDiscovery = %+v, want [%+v]", bd, want)
	}

	// RESPONSE-PORT: the answer goes to another port of the same IP.
	other := listenLoopback(t)
	otherPort := uint16(other.LocalAddr().(*net.UDPAddr).Port)
	if _, err := conn.WriteToUDPAddrPort(bindingRequest(t, responsePortAttr(otherPort)).Raw, sock(a2, p2)); err != nil {
		t.Fatal(err)
	}
	if ans, from := readAnswer(t, other, ioTimeout); ans == nil || from != sock(a2, p2) {
		t.Errorf("RESPONSE-PORT %d: answer %v from %s, want one from %s", otherPort, ans, from, sock(a2, p2))
	}

	// Over TCP on the primary's address and port (the TCP listener shares
	// them), pion answers: behaviour discovery is UDP only.
	tcp, err := net.Dial("tcp", sock(a1, p1).String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if _, err := tcp.Write(bindingRequest(t, changeAttr(changeIPFlag|changePortFlag)).Raw); err != nil {
		t.Fatal(err)
	}
	_ = tcp.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 1500)
	n, err := tcp.Read(buf)
	tcpAnswer := &stun.Message{Raw: buf[:max(n, 0)]}
	if err != nil || tcpAnswer.Decode() != nil || tcpAnswer.Type.Class != stun.ClassErrorResponse || tcpAnswer.Contains(stun.AttrOtherAddress) {
		t.Errorf("CHANGE-REQUEST over TCP: %v (%v), want pion's 420 on the connection", tcpAnswer, err)
	}

	// Only Binding on the alternates: an Allocate gets nothing.
	alloc, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []netip.AddrPort{sock(a2, p1), sock(a1, p2), sock(a2, p2)} {
		if ans, _ := udpExchange(t, conn, s, alloc.Raw, 300*time.Millisecond); ans != nil {
			t.Errorf("Allocate to alternate %s answered: %v", s, ans)
		}
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_requests_refused_total", "reason", refusedNotBinding); got != 3 {
		t.Errorf("requests_refused_total{reason=not_binding} = %v, want 3", got)
	}
	// Eight answered here, and the TCP one handed to pion.
	if got := counterValue(t, tr.Relay, "turnpike_relay_stun_binding_total", "version", stunRFC5389, "result", bindingAnswered); got != 9 {
		t.Errorf("stun_binding_total{rfc5389,answered} = %v, want 9", got)
	}
}

// TestBehaviorDiscoveryWithoutAlternate: when no alternate address can be
// bound, RFC 5780 section 6 rules: no OTHER-ADDRESS, 420 to a change, no
// socket on the alternate port; RESPONSE-ORIGIN still.
func TestBehaviorDiscoveryWithoutAlternate(t *testing.T) {
	tr, altPort := behaviorRelay(t, "192.0.2.99")
	conn := listenLoopback(t)
	primary := netip.MustParseAddrPort("127.0.0.1:" + itoa(tr.port))
	ans, _ := udpExchange(t, conn, primary, bindingRequest(t).Raw, ioTimeout)
	if ans == nil || ans.Contains(stun.AttrOtherAddress) || addrAttr(t, ans, stun.AttrResponseOrigin) != primary {
		t.Fatalf("plain Binding: %v; want RESPONSE-ORIGIN %s and no OTHER-ADDRESS", ans, primary)
	}
	ans, _ = udpExchange(t, conn, primary, bindingRequest(t, changeAttr(changePortFlag)).Raw, ioTimeout)
	var ec stun.ErrorCodeAttribute
	if ans == nil || ec.GetFrom(ans) != nil || ec.Code != stun.CodeUnknownAttribute {
		t.Fatalf("CHANGE-REQUEST: %v, want 420", ans)
	}
	if bd := relayStatus(t, tr).BehaviorDiscovery; bd == nil || len(bd.Addresses) != 1 || bd.Addresses[0].Other != "" {
		t.Errorf("/status behaviorDiscovery = %+v, want the primary without other", bd)
	}
	alt := netip.MustParseAddrPort("127.0.0.1:" + itoa(altPort))
	if ans, _ := udpExchange(t, conn, alt, bindingRequest(t).Raw, 300*time.Millisecond); ans != nil {
		t.Errorf("the alternate port is open without an alternate address: %v", ans)
	}
}

// TestBehaviorDiscoveryOff: without stun.behaviorDiscovery pion answers:
// a plain request with the mapped address only, CHANGE-REQUEST (even one
// asking for nothing), RESPONSE-PORT or PADDING with 420.
func TestBehaviorDiscoveryOff(t *testing.T) {
	tr := startRelay(t, baseConfig(t, t.TempDir()), baseCredentials())
	if bd := relayStatus(t, tr).BehaviorDiscovery; bd != nil {
		t.Errorf("/status behaviorDiscovery = %+v while off", bd)
	}
	conn := listenLoopback(t)
	primary := netip.MustParseAddrPort("127.0.0.1:" + itoa(tr.port))
	ans, _ := udpExchange(t, conn, primary, bindingRequest(t).Raw, ioTimeout)
	if ans == nil || ans.Type != stun.BindingSuccess || ans.Contains(stun.AttrOtherAddress) || ans.Contains(stun.AttrResponseOrigin) {
		t.Fatalf("plain Binding: %v, want pion's answer", ans)
	}
	for _, attr := range []stun.Setter{changeAttr(0), changeAttr(changeIPFlag), responsePortAttr(4000), paddingAttr(16)} {
		ans, _ := udpExchange(t, conn, primary, bindingRequest(t, attr).Raw, ioTimeout)
		var ec stun.ErrorCodeAttribute
		var u stun.UnknownAttributes
		if ans == nil || ec.GetFrom(ans) != nil || ec.Code != stun.CodeUnknownAttribute || u.GetFrom(ans) != nil || len(u) != 1 {
			t.Errorf("%v: answer %v, want 420 naming it", attr, ans)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// FuzzBehaviorAnswer: any Binding request decodes into an answer or a
// refusal without panicking, and a success answer is never longer than the
// request by more than its fixed attributes.
func FuzzBehaviorAnswer(f *testing.F) {
	f.Add(bindingRequest(f).Raw)
	f.Add(bindingRequest(f, changeAttr(changeIPFlag|changePortFlag), stun.Fingerprint).Raw)
	f.Add(bindingRequest(f, paddingAttr(200), stun.Fingerprint).Raw)
	f.Add(bindingRequest(f, responsePortAttr(9), paddingAttr(4)).Raw)
	a1, a2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	set := &discoverySet{addrs: [2]netip.Addr{a1, a2}, ports: [2]uint16{3478, 3479}}
	for a := range 2 {
		for p := range 2 {
			set.conns[a][p] = &net.UDPConn{}
		}
	}
	client := netip.MustParseAddrPort("[2001:db8::7]:40000")
	f.Fuzz(func(t *testing.T, b []byte) {
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		if m.Decode() != nil || m.Type != stun.BindingRequest {
			return
		}
		for _, point := range []discoveryPoint{{}, {set: set, addr: 1}} {
			rep, handled := answerBehavior(m, len(b), client, point)
			if !handled {
				continue
			}
			if rep.to.IsValid() && rep.to.Addr() != client.Addr() {
				t.Fatalf("answer sent to %s, not to the requester's IP", rep.to)
			}
			// Header, four IPv6 addresses (24 bytes each), an empty
			// PADDING, FINGERPRINT; or an error with three unknown types.
			if limit := max(len(b), stunHeaderSize+4*24+paddingAttrOverhead+fingerprintSize); len(rep.answer) > limit {
				t.Fatalf("answer %d bytes to a %d-byte request", len(rep.answer), len(b))
			}
		}
	})
}

// BenchmarkAnswerBehavior is the cost of one behaviour discovery answer
// (decode, parse, build), without the sockets.
func BenchmarkAnswerBehavior(b *testing.B) {
	set := &discoverySet{addrs: [2]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}, ports: [2]uint16{3478, 3479}}
	req := bindingRequest(b, changeAttr(changeIPFlag|changePortFlag), stun.Fingerprint).Raw
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	b.ReportAllocs()
	for b.Loop() {
		m := &stun.Message{Raw: append([]byte(nil), req...)}
		if m.Decode() != nil {
			b.Fatal("decode")
		}
		if _, handled := answerBehavior(m, len(req), client, discoveryPoint{set: set}); !handled {
			b.Fatal("not handled")
		}
	}
}
