package adversarial

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// client speaks TURN message by message over UDP, TCP or TLS from the pub
// namespace, so a test can send what no well-behaved client would (a type
// with the top bits set, two XOR-PEER-ADDRESS, an IPv6 family with four
// address bytes) and see each answer, or its absence.
type client struct {
	t         *testing.T
	conn      net.Conn
	stream    bool
	frames    net.PacketConn // cuts a TCP or TLS stream into messages
	nonce     stun.Nonce
	integrity stun.MessageIntegrity
	// data holds Data indications and ChannelData that arrived while a
	// response was awaited.
	data [][]byte
}

// errNoAnswer is a request the relay did not answer within answerTimeout.
var errNoAnswer = errors.New("no answer")

// answerTimeout bounds the wait for one answer. It is a failure bound, and
// the time a test spends on a request the relay rightly drops.
const answerTimeout = 2 * time.Second

// dial connects to the relay's listener for network "udp", "tcp" or "tls"
// on the node address (IPv4, or IPv6 when v6).
func (l *lab) dial(network string, v6 bool) *client {
	l.t.Helper()
	return l.dialFrom(network, v6, "")
}

// dialFrom is dial from the local address from (any when empty): a second
// client address in the pub namespace, for per-source limits.
func (l *lab) dialFrom(network string, v6 bool, from string) *client {
	l.t.Helper()
	host, port, transport := nodeAddr, turnPort, network
	if v6 {
		host = nodeAddr6
	}
	if network == "tls" {
		port, transport = tlsPort, "tcp"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conn net.Conn
	err := l.pub.Do(func() (err error) {
		var d net.Dialer
		if from != "" {
			local := net.JoinHostPort(from, "0")
			if transport == "udp" {
				d.LocalAddr, err = net.ResolveUDPAddr("udp", local)
			} else {
				d.LocalAddr, err = net.ResolveTCPAddr("tcp", local)
			}
			if err != nil {
				return err
			}
		}
		conn, err = d.DialContext(ctx, transport, net.JoinHostPort(host, strconv.Itoa(port)))
		return err
	})
	if err != nil {
		l.t.Fatalf("dial %s: %v", network, err)
	}
	if network == "tls" {
		// The lab's certificate is self-signed; what is tested is the relay's
		// handling of the stream inside.
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec
		if err := tc.HandshakeContext(ctx); err != nil {
			l.t.Fatalf("TLS handshake: %v", err)
		}
		conn = tc
	}
	l.t.Cleanup(func() { _ = conn.Close() })
	c := &client{t: l.t, conn: conn, stream: network != "udp",
		integrity: stun.NewLongTermIntegrity(labUser, labRealm, labPassword)}
	if c.stream {
		c.frames = turn.NewSTUNConn(conn)
	}
	return c
}

// write sends raw bytes.
func (c *client) write(b []byte) error {
	_, err := c.conn.Write(b)
	return err
}

// read returns the next message or ChannelData frame.
func (c *client) read(timeout time.Duration) ([]byte, error) {
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var n int
	var err error
	if c.stream {
		n, _, err = c.frames.ReadFrom(buf)
	} else {
		n, err = c.conn.Read(buf)
	}
	return buf[:n], err
}

// build makes a message of type typ (any 16 bits, even ones no STUN type
// has) with attrs, signed once the relay has given a nonce.
func (c *client) build(typ uint16, attrs ...stun.Setter) *stun.Message {
	m := stun.New()
	m.TransactionID = stun.NewTransactionID()
	m.WriteHeader()
	// The type is written into the header by hand, before anything is
	// signed: stun.MessageType holds only STUN's 14 bits.
	binary.BigEndian.PutUint16(m.Raw[0:2], typ)
	for _, a := range attrs {
		if err := a.AddTo(m); err != nil {
			c.t.Fatal(err)
		}
	}
	if c.nonce != nil {
		for _, a := range []stun.Setter{stun.NewUsername(labUser), stun.NewRealm(labRealm), c.nonce, c.integrity} {
			if err := a.AddTo(m); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	return m
}

// request sends a request of type typ and returns the answer, retrying
// once with the nonce of a 401 or 438. A dropped request or a closed
// connection is an error, not a failure: tests ask for exactly that.
func (c *client) request(typ uint16, attrs ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; ; attempt++ {
		m := c.build(typ, attrs...)
		if err := c.write(m.Raw); err != nil {
			return nil, err
		}
		res, err := c.await(m.TransactionID)
		if err != nil {
			return nil, err
		}
		if ec := stun.ErrorCode(errorCode(res)); (ec == stun.CodeUnauthorized || ec == stun.CodeStaleNonce) && attempt == 0 {
			var nonce stun.Nonce
			if err := nonce.GetFrom(res); err != nil {
				return nil, err
			}
			c.nonce = nonce
			continue
		}
		return res, nil
	}
}

func (c *client) await(id [stun.TransactionIDSize]byte) (*stun.Message, error) {
	deadline := time.Now().Add(answerTimeout)
	for {
		b, err := c.read(time.Until(deadline))
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return nil, errNoAnswer
		}
		if err != nil {
			return nil, err
		}
		m := &stun.Message{Raw: b}
		if b[0]&0xc0 != 0 || m.Decode() != nil || m.Type.Class == stun.ClassIndication {
			c.data = append(c.data, b)
			continue
		}
		if m.TransactionID == id {
			return m, nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// code is the error code of an answer: 0 for success, the STUN error code,
// or -1 when there was no answer (dropped, or the connection closed).
func code(res *stun.Message, err error) int {
	if err != nil {
		return -1
	}
	return errorCode(res)
}

func errorCode(m *stun.Message) int {
	if m.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) != nil {
		return -1
	}
	return int(ec.Code)
}

// typeOf is the 16-bit type of method and class.
func typeOf(method stun.Method, class stun.MessageClass) uint16 {
	return stun.NewType(method, class).Value()
}

// allocate makes an allocation (UDP relaying, or TCP when tcp) and returns
// its relayed address; the allocation's family follows the connection's.
func (c *client) allocate(tcp bool) netip.AddrPort {
	c.t.Helper()
	transport := byte(17)
	if tcp {
		transport = 6
	}
	attrs := []stun.Setter{rawAttr(stun.AttrRequestedTransport, []byte{transport, 0, 0, 0})}
	if isV6(c.conn.RemoteAddr()) {
		attrs = append(attrs, rawAttr(stun.AttrRequestedAddressFamily, []byte{2, 0, 0, 0}))
	}
	res, err := c.request(typeOf(stun.MethodAllocate, stun.ClassRequest), attrs...)
	if err != nil || errorCode(res) != 0 {
		c.t.Fatalf("allocate: %v %v", err, res)
	}
	relayed, err := xorAddr(res, stun.AttrXORRelayedAddress)
	if err != nil {
		c.t.Fatal(err)
	}
	return relayed
}

func isV6(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Is6()
}

// createPermission returns the answer's code (see code).
func (c *client) createPermission(peers ...netip.AddrPort) int {
	attrs := make([]stun.Setter, len(peers))
	for i, p := range peers {
		attrs[i] = xorPeer(p)
	}
	return code(c.request(typeOf(stun.MethodCreatePermission, stun.ClassRequest), attrs...))
}

// channelBind binds number to peer with a request of type typ (normally
// typeOf(stun.MethodChannelBind, stun.ClassRequest)).
func (c *client) channelBind(typ, number uint16, peer netip.AddrPort) int {
	return code(c.request(typ, rawAttr(stun.AttrChannelNumber, []byte{byte(number >> 8), byte(number), 0, 0}), xorPeer(peer)))
}

// connect asks for an RFC 6062 TCP connection to peer.
func (c *client) connect(peer netip.AddrPort) int {
	return code(c.request(typeOf(stun.MethodConnect, stun.ClassRequest), xorPeer(peer)))
}

// send relays data to peer with a Send indication.
func (c *client) send(peer netip.AddrPort, data []byte) {
	c.t.Helper()
	m := c.build(typeOf(stun.MethodSend, stun.ClassIndication), xorPeer(peer), rawAttr(stun.AttrData, data))
	if err := c.write(m.Raw); err != nil {
		c.t.Fatal(err)
	}
}

// sendChannel relays data on a bound channel with ChannelData.
func (c *client) sendChannel(number uint16, data []byte) {
	c.t.Helper()
	frame := binary.BigEndian.AppendUint16(nil, number)
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(data)))
	frame = append(frame, data...)
	for c.stream && len(frame)%4 != 0 { // RFC 8656 section 12.5: padded over streams
		frame = append(frame, 0)
	}
	if err := c.write(frame); err != nil {
		c.t.Fatal(err)
	}
}

// receive returns the data of the next Data indication.
func (c *client) receive(timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		var b []byte
		if len(c.data) > 0 {
			b, c.data = c.data[0], c.data[1:]
		} else {
			var err error
			if b, err = c.read(time.Until(deadline)); err != nil {
				return nil, err
			}
		}
		m := &stun.Message{Raw: b}
		if m.Decode() == nil && m.Type == stun.NewType(stun.MethodData, stun.ClassIndication) {
			if d, err := m.Get(stun.AttrData); err == nil {
				return d, nil
			}
		}
	}
}

func rawAttr(t stun.AttrType, v []byte) stun.Setter { return stun.RawAttribute{Type: t, Value: v} }

const magicCookie = 0x2112A442

// xorPeer encodes XOR-PEER-ADDRESS by hand, keeping the family as written
// (stun.XORMappedAddress would send ::ffff:a.b.c.d as IPv4).
type xorPeer netip.AddrPort

func (p xorPeer) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	family := byte(1)
	if ap.Addr().Is6() {
		family = 2
	}
	m.Add(stun.AttrXORPeerAddress, xorValue(m, family, ap.Port(), ap.Addr().AsSlice()))
	return nil
}

// rawPeer is an XOR-PEER-ADDRESS with any family and any number of address
// bytes, for the malformed ones.
type rawPeer struct {
	family byte
	port   uint16
	addr   []byte
}

func (p rawPeer) AddTo(m *stun.Message) error {
	m.Add(stun.AttrXORPeerAddress, xorValue(m, p.family, p.port, append([]byte(nil), p.addr...)))
	return nil
}

// xorValue is an XOR-address attribute's value (RFC 8489 section 14.2).
func xorValue(m *stun.Message, family byte, port uint16, addr []byte) []byte {
	v := []byte{0, family, 0, 0}
	binary.BigEndian.PutUint16(v[2:], port^uint16(magicCookie>>16))
	key := binary.BigEndian.AppendUint32(nil, magicCookie)
	key = append(key, m.TransactionID[:]...)
	for i := range addr {
		addr[i] ^= key[i%len(key)]
	}
	return append(v, addr...)
}

func xorAddr(m *stun.Message, t stun.AttrType) (netip.AddrPort, error) {
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, t); err != nil {
		return netip.AddrPort{}, err
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %v", a.IP)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)), nil
}
