package adversarial

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// altPort is the lab relay's behaviour discovery alternate port.
const altPort = 3479

// behaviorLab is the lab with behaviour discovery on: nodeAddr2, the
// second address on the node's interface, is the alternate address.
// tune, when set, changes relay.yaml further.
func behaviorLab(t *testing.T, tune func(*config.Relay)) *lab {
	return newLab(t, func(cfg *config.Relay) {
		cfg.STUN.BehaviorDiscovery = &config.BehaviorDiscovery{AlternatePort: altPort, AlternateAddresses: []string{nodeAddr2}}
		if tune != nil {
			tune(cfg)
		}
	})
}

func bindingMsg(t *testing.T, attrs ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, attrs...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func changeReq(flags byte) stun.Setter {
	return rawAttr(stun.AttrChangeRequest, []byte{0, 0, 0, flags})
}

func responsePort(p int) stun.Setter {
	return rawAttr(stun.AttrResponsePort, []byte{byte(p >> 8), byte(p), 0, 0})
}

func padding(n int) stun.Setter { return rawAttr(stun.AttrPadding, make([]byte, n)) }

// badFingerprint is a FINGERPRINT attribute whose value is wrong.
var badFingerprint = rawAttr(stun.AttrFingerprint, []byte{1, 2, 3, 4})

// collect reads every datagram conn receives until it has been quiet for
// wait, and returns their sizes and types.
func collect(conn net.PacketConn, wait time.Duration) (sizes []int, types []stun.MessageType) {
	buf := make([]byte, 2048)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return sizes, types
		}
		m := &stun.Message{Raw: buf[:n]}
		_ = m.Decode()
		sizes, types = append(sizes, n), append(types, m.Type)
	}
}

// TestBehaviorDiscoveryNoAmplifierNoReflector attacks the four behaviour
// discovery sockets from one source with every RFC 5780 attribute a
// reflection attack would use: no answer is longer than its request plus
// the fixed attributes (80 bytes for IPv4), a padded request gets at most
// its own size back, RESPONSE-PORT reaches only the requester's IP,
// PADDING with RESPONSE-PORT and RESPONSE-PORT 0 get 400, a bad
// FINGERPRINT or a malformed CHANGE-REQUEST gets nothing or 400, the
// alternate sockets answer nothing but Binding requests, and nothing is
// sent anywhere else.
func TestBehaviorDiscoveryNoAmplifierNoReflector(t *testing.T) {
	l := behaviorLab(t, nil)
	conn := l.pub.ListenPacket("udp4", clientAddr+":0")
	target := l.pub.ListenPacket("udp4", clientAddr+":0")
	targetPort := target.LocalAddr().(*net.UDPAddr).Port
	// Another IP of the pub namespace on the same port: where a reflector
	// would send if it could be told another address.
	decoy := l.pub.ListenPacket("udp4", net.JoinHostPort(peerAddr, strconv.Itoa(targetPort)))
	wireBefore := l.wirePackets()

	sockets := []string{nodeAddr + ":" + strconv.Itoa(turnPort), nodeAddr + ":" + strconv.Itoa(altPort),
		nodeAddr2 + ":" + strconv.Itoa(turnPort), nodeAddr2 + ":" + strconv.Itoa(altPort)}
	const fixed = 20 + 4*(4+8) + 4 + 8 // header, four IPv4 addresses, an empty PADDING, FINGERPRINT
	for _, tc := range []struct {
		name    string
		req     []byte
		answers int // on conn
		class   stun.MessageClass
	}{
		{"smallest request", bindingMsg(t), 1, stun.ClassSuccessResponse},
		{"change both", bindingMsg(t, changeReq(0x06)), 1, stun.ClassSuccessResponse},
		{"change port", bindingMsg(t, changeReq(0x02), stun.Fingerprint), 1, stun.ClassSuccessResponse},
		{"empty padding", bindingMsg(t, padding(0), stun.Fingerprint), 1, stun.ClassSuccessResponse},
		{"small padding", bindingMsg(t, padding(8)), 1, stun.ClassSuccessResponse},
		{"MTU padding", bindingMsg(t, padding(1400), stun.Fingerprint), 1, stun.ClassSuccessResponse},
		{"padding with response port", bindingMsg(t, padding(200), responsePort(targetPort)), 1, stun.ClassErrorResponse},
		{"response port 0", bindingMsg(t, responsePort(0)), 1, stun.ClassErrorResponse},
		{"malformed change request", bindingMsg(t, rawAttr(stun.AttrChangeRequest, []byte{0, 6})), 1, stun.ClassErrorResponse},
		{"bad fingerprint", bindingMsg(t, changeReq(0x06), badFingerprint), 0, 0},
	} {
		for _, s := range sockets {
			to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))
			if _, err := conn.WriteTo(tc.req, to); err != nil {
				t.Fatal(err)
			}
			sizes, types := collect(conn, 300*time.Millisecond)
			if len(sizes) != tc.answers {
				t.Errorf("%s to %s: %d answers, want %d", tc.name, s, len(sizes), tc.answers)
				continue
			}
			for i, n := range sizes {
				if types[i].Class != tc.class {
					t.Errorf("%s to %s: answer %v, want class %v", tc.name, s, types[i], tc.class)
				}
				if n > max(len(tc.req), fixed) {
					t.Errorf("%s to %s: %d-byte answer to a %d-byte request", tc.name, s, n, len(tc.req))
				}
			}
			if tc.name == "MTU padding" && sizes[0] < len(tc.req)-8 {
				t.Errorf("padded request of %d bytes: answer of only %d bytes, want about as long", len(tc.req), sizes[0])
			}
		}
	}

	// RESPONSE-PORT: to the requester's IP on that port, never elsewhere.
	for _, s := range sockets {
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))
		if _, err := conn.WriteTo(bindingMsg(t, responsePort(targetPort), changeReq(0x06)), to); err != nil {
			t.Fatal(err)
		}
		if sizes, _ := collect(target, 300*time.Millisecond); len(sizes) != 1 {
			t.Errorf("RESPONSE-PORT %d via %s: %d answers at the port, want 1", targetPort, s, len(sizes))
		}
	}
	if sizes, _ := collect(decoy, 300*time.Millisecond); len(sizes) != 0 {
		t.Errorf("%d answers reached another IP than the requester's", len(sizes))
	}
	if sizes, _ := collect(conn, 100*time.Millisecond); len(sizes) != 0 {
		t.Errorf("RESPONSE-PORT requests were also answered to their source port: %d", len(sizes))
	}

	// The alternates answer Binding only.
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport, stun.Fingerprint).Raw
	channelData := []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}
	for _, s := range sockets[1:] {
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))
		for _, msg := range [][]byte{allocate, channelData} {
			if _, err := conn.WriteTo(msg, to); err != nil {
				t.Fatal(err)
			}
		}
		if sizes, _ := collect(conn, 300*time.Millisecond); len(sizes) != 0 {
			t.Errorf("alternate %s answered an Allocate or ChannelData", s)
		}
	}
	if got := l.relay.metric(t, `turnpike_relay_requests_refused_total{reason="not_binding"}`); got != 6 {
		t.Errorf(`requests_refused_total{reason="not_binding"} = %v, want 6`, got)
	}
	if wire := l.wirePackets() - wireBefore; wire != 0 {
		t.Errorf("%d packets left the node for the dead end", wire)
	}
}

// TestBehaviorDiscoveryAuthThrottle: the alternate sockets share the
// listener's auth throttle: once a source has failed authentication too
// often, its Binding requests carrying MESSAGE-INTEGRITY are dropped there
// too; those without are still answered.
func TestBehaviorDiscoveryAuthThrottle(t *testing.T) {
	// A slow refill, so the source stays throttled while the test runs.
	l := behaviorLab(t, func(cfg *config.Relay) {
		cfg.Limits.AuthFailuresPerSecond, cfg.Limits.AuthFailureBurst = 0.05, 5
	})
	c := l.dial("udp", false)
	c.integrity = stun.NewLongTermIntegrity(labUser, labRealm, "not-the-password")
	if got := code(c.request(allocateType, udpTransport)); got <= 0 {
		t.Fatalf("Allocate with a wrong password: %d, want an error response", got)
	}
	for range 10 { // past the burst
		if err := c.write(c.build(allocateType, udpTransport).Raw); err != nil {
			t.Fatal(err)
		}
	}
	drainAnswers(c)
	conn := l.pub.ListenPacket("udp4", clientAddr+":0")
	withIntegrity := bindingMsg(t, rawAttr(stun.AttrMessageIntegrity, make([]byte, 20)))
	for _, s := range []string{nodeAddr + ":" + strconv.Itoa(turnPort), nodeAddr2 + ":" + strconv.Itoa(altPort)} {
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))
		if _, err := conn.WriteTo(withIntegrity, to); err != nil {
			t.Fatal(err)
		}
		if sizes, _ := collect(conn, 500*time.Millisecond); len(sizes) != 0 {
			t.Errorf("%s answered a throttled source's Binding with MESSAGE-INTEGRITY", s)
		}
		if _, err := conn.WriteTo(bindingMsg(t), to); err != nil {
			t.Fatal(err)
		}
		if sizes, _ := collect(conn, 500*time.Millisecond); len(sizes) != 1 {
			t.Errorf("%s did not answer a plain Binding from a throttled source", s)
		}
	}
}
