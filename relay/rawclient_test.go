package relay

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// rawClient speaks TURN message by message, so tests can see each error
// code and choose between Send indications and ChannelData. (pion's client
// hides both.) It works over a UDP socket or a TCP stream.
type rawClient struct {
	t         *testing.T
	conn      net.Conn
	reader    net.PacketConn // frames TCP streams; plain reads for UDP
	stream    bool
	username  string
	realm     string
	nonce     stun.Nonce
	integrity stun.MessageIntegrity
	// pending holds data that arrived while waiting for a response.
	pending []peerData
	// readTimeout bounds each read; zero means ioTimeout. A test that
	// expects nothing to arrive sets it short.
	readTimeout time.Duration
}

// peerData is a datagram relayed from a peer to the client.
type peerData struct {
	from    netip.AddrPort // zero for ChannelData (the channel says who)
	channel uint16
	data    []byte
}

// ioTimeout bounds every read, so a lost reply fails the test instead of
// hanging it. It is a failure bound, not a timing assertion.
const ioTimeout = 10 * time.Second

func dialRaw(t *testing.T, network, addr, username, password string) *rawClient {
	t.Helper()
	return dialRawFrom(t, "", network, addr, username, password)
}

// dialRawFrom is dialRaw from the local IP address from (any when empty).
func dialRawFrom(t *testing.T, from, network, addr, username, password string) *rawClient {
	t.Helper()
	d := net.Dialer{}
	if from != "" {
		local, err := net.ResolveUDPAddr("udp", net.JoinHostPort(from, "0"))
		if err != nil {
			t.Fatal(err)
		}
		d.LocalAddr = local
		if network == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: local.IP}
		}
	}
	conn, err := d.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawClient{t: t, conn: conn, username: username, realm: testRealm, stream: network == "tcp"}
	c.integrity = stun.NewLongTermIntegrity(username, testRealm, password)
	if c.stream {
		c.reader = turn.NewSTUNConn(conn)
	}
	return c
}

// read returns the next message or ChannelData frame.
func (c *rawClient) read() ([]byte, error) {
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(cmp.Or(c.readTimeout, ioTimeout)))
	var n int
	var err error
	if c.stream {
		n, _, err = c.reader.ReadFrom(buf)
	} else {
		n, err = c.conn.Read(buf)
	}
	return buf[:n], err
}

// request sends a request (authenticated once the server gave a nonce) and
// returns the response, retrying once on 401/438 with the new nonce.
func (c *rawClient) request(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != nil {
			setters = append(setters, stun.NewUsername(c.username), stun.NewRealm(c.realm), c.nonce, c.integrity)
		}
		req := stun.MustBuild(setters...)
		if _, err := c.conn.Write(req.Raw); err != nil {
			c.t.Fatal(err)
		}
		res := c.awaitResponse(req.TransactionID)
		var code stun.ErrorCodeAttribute
		if res.Type.Class == stun.ClassErrorResponse && code.GetFrom(res) == nil &&
			(code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce) && res.Contains(stun.AttrNonce) && attempt == 0 {
			var nonce stun.Nonce
			if err := nonce.GetFrom(res); err != nil {
				c.t.Fatal(err)
			}
			c.nonce = nonce
			continue
		}
		return res
	}
}

func (c *rawClient) awaitResponse(id [stun.TransactionIDSize]byte) *stun.Message {
	c.t.Helper()
	for {
		b, err := c.read()
		if err != nil {
			c.t.Fatalf("waiting for response: %v", err)
		}
		if d, ok := parsePeerData(b); ok {
			c.pending = append(c.pending, d)
			continue
		}
		m := &stun.Message{Raw: b}
		if err := m.Decode(); err != nil {
			c.t.Fatalf("bad message from relay: %v", err)
		}
		if m.TransactionID == id {
			if m.Contains(stun.AttrSoftware) {
				c.t.Error("the relay sent a SOFTWARE attribute")
			}
			return m
		}
	}
}

// errorCode is 0 for a success response, else the STUN error code.
func errorCode(m *stun.Message) int {
	if m.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(m); err != nil {
		return -1
	}
	return int(code.Code)
}

// allocate requests an allocation: transport 17 (UDP) or 6 (TCP), family
// IPv4 or IPv6. It returns the error code (0 on success) and the relayed address.
func (c *rawClient) allocate(transport byte, v6 bool) (int, netip.AddrPort) {
	c.t.Helper()
	attrs := []stun.Setter{rawAttr(stun.AttrRequestedTransport, []byte{transport, 0, 0, 0})}
	if v6 {
		attrs = append(attrs, rawAttr(stun.AttrRequestedAddressFamily, []byte{2, 0, 0, 0}))
	}
	res := c.request(stun.MethodAllocate, attrs...)
	if code := errorCode(res); code != 0 {
		return code, netip.AddrPort{}
	}
	relayed, err := xorAddrFrom(res, stun.AttrXORRelayedAddress)
	if err != nil {
		c.t.Fatal(err)
	}
	return 0, relayed
}

func (c *rawClient) mustAllocate(v6 bool) netip.AddrPort {
	c.t.Helper()
	code, relayed := c.allocate(17, v6)
	if code != 0 {
		c.t.Fatalf("allocate: error %d", code)
	}
	return relayed
}

func (c *rawClient) createPermission(peer netip.Addr) int {
	return errorCode(c.request(stun.MethodCreatePermission, xorPeer(netip.AddrPortFrom(peer, 9))))
}

func (c *rawClient) channelBind(number uint16, peer netip.AddrPort) int {
	return errorCode(c.request(stun.MethodChannelBind, rawAttr(stun.AttrChannelNumber, []byte{byte(number >> 8), byte(number), 0, 0}), xorPeer(peer)))
}

func (c *rawClient) connect(peer netip.AddrPort) int {
	return errorCode(c.request(stun.MethodConnect, xorPeer(peer)))
}

func (c *rawClient) refresh(lifetime uint32) int {
	return errorCode(c.request(stun.MethodRefresh, rawAttr(stun.AttrLifetime, binary.BigEndian.AppendUint32(nil, lifetime))))
}

// send relays data to peer with a Send indication.
func (c *rawClient) send(peer netip.AddrPort, data []byte) {
	c.t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), xorPeer(peer), rawAttr(stun.AttrData, data))
	if _, err := c.conn.Write(m.Raw); err != nil {
		c.t.Fatal(err)
	}
}

// sendChannel relays data on a bound channel with ChannelData.
func (c *rawClient) sendChannel(number uint16, data []byte) {
	c.t.Helper()
	frame := binary.BigEndian.AppendUint16(nil, number)
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(data)))
	frame = append(frame, data...)
	if c.stream {
		for len(frame)%4 != 0 { // RFC 8656 section 12.5: pad over streams
			frame = append(frame, 0)
		}
	}
	if _, err := c.conn.Write(frame); err != nil {
		c.t.Fatal(err)
	}
}

// receive returns the next datagram relayed from a peer.
func (c *rawClient) receive() (peerData, error) {
	if len(c.pending) > 0 {
		d := c.pending[0]
		c.pending = c.pending[1:]
		return d, nil
	}
	for {
		b, err := c.read()
		if err != nil {
			return peerData{}, err
		}
		if d, ok := parsePeerData(b); ok {
			return d, nil
		}
	}
}

// parsePeerData decodes a Data indication or a ChannelData frame.
func parsePeerData(b []byte) (peerData, bool) {
	if len(b) >= 4 && b[0]&0xc0 == 0x40 {
		n := int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+n {
			return peerData{}, false
		}
		return peerData{channel: binary.BigEndian.Uint16(b), data: append([]byte(nil), b[4:4+n]...)}, true
	}
	m := &stun.Message{Raw: b}
	if m.Decode() != nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
		return peerData{}, false
	}
	from, err := xorAddrFrom(m, stun.AttrXORPeerAddress)
	if err != nil {
		return peerData{}, false
	}
	data, err := m.Get(stun.AttrData)
	if err != nil {
		return peerData{}, false
	}
	return peerData{from: from, data: append([]byte(nil), data...)}, true
}

func rawAttr(t stun.AttrType, v []byte) stun.Setter {
	return stun.RawAttribute{Type: t, Value: v}
}

// xorPeer encodes XOR-PEER-ADDRESS by hand, keeping the address family as
// written: stun.XORMappedAddress would send ::ffff:127.0.0.1 as plain
// IPv4, and the point of some tests is to send the IPv6 spelling.
type xorPeer netip.AddrPort

func (p xorPeer) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	family, addr := byte(1), ap.Addr().AsSlice()
	if ap.Addr().Is6() {
		family = 2
	}
	v := []byte{0, family, 0, 0}
	binary.BigEndian.PutUint16(v[2:], ap.Port()^uint16(magicCookie>>16))
	key := binary.BigEndian.AppendUint32(nil, magicCookie)
	key = append(key, m.TransactionID[:]...)
	for i := range addr {
		addr[i] ^= key[i]
	}
	m.Add(stun.AttrXORPeerAddress, append(v, addr...))
	return nil
}

func xorAddrFrom(m *stun.Message, t stun.AttrType) (netip.AddrPort, error) {
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, t); err != nil {
		return netip.AddrPort{}, err
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.AddrPort{}, errors.New("bad address")
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)), nil
}

// roundTrip sends payload to the echo peer through the relay (Send
// indication, or ChannelData when channel is non-zero) until the echo comes
// back; UDP may drop a datagram, so it resends a few times.
func (c *rawClient) roundTrip(peer netip.AddrPort, channel uint16, payload []byte) peerData {
	c.t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		if channel != 0 {
			c.sendChannel(channel, payload)
		} else {
			c.send(peer, payload)
		}
		d, err := c.receive()
		if err != nil {
			continue
		}
		if string(d.data) != string(payload) {
			c.t.Fatalf("echo mismatch: got %q want %q", d.data, payload)
		}
		return d
	}
	c.t.Fatalf("no echo from %s through the relay", peer)
	return peerData{}
}

func (c *rawClient) String() string { return fmt.Sprintf("rawClient(%s)", c.conn.RemoteAddr()) }
