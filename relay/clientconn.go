package relay

import (
	"context"
	"encoding/binary"
	"net"
	"time"

	"github.com/pion/stun/v4"
)

// Client-facing sockets are wrapped for two things pion's hooks cannot do:
//
//   - Inspect each STUN request before pion handles it (inspectRequest):
//     pion asks its AuthHandler for one key, but during a shared-secret
//     rotation a REST username has one key per valid secret; and its
//     PermissionHandler does not say whether a ChannelBind or a
//     CreatePermission is asking, which the channel quota needs.
//   - Answer a ChannelBind refused by the peer policy with 403 Forbidden
//     (RFC 8656 section 11.2); pion v5.1.2 answers it with 401, which
//     clients take as "retry with credentials".
//
// Both only look at STUN requests / error responses, recognised by their
// first two bytes, so ChannelData and indications pass at the cost of a
// comparison.

const (
	stunHeaderSize = 20
	magicCookie    = 0x2112A442
)

// isSTUNRequest reports whether b starts with a STUN request header (class
// bits 0b00; ChannelData starts with 0b01).
func isSTUNRequest(b []byte) bool {
	if len(b) < stunHeaderSize || b[0]&0xc0 != 0 {
		return false
	}
	t := binary.BigEndian.Uint16(b)
	return t&0x0110 == 0 && binary.BigEndian.Uint32(b[4:]) == magicCookie
}

// channelBindErrorType is the message type of a ChannelBind error response.
var channelBindErrorType = stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse).Value()

// fixChannelBindForbidden turns pion's "401 without NONCE" answer to a
// ChannelBind (its answer to a peer the PermissionHandler refused) into 403.
// A genuine 401 (missing or stale credentials) carries a NONCE and is kept.
func fixChannelBindForbidden(b []byte) (fixed []byte, changed bool) {
	if len(b) < stunHeaderSize || binary.BigEndian.Uint16(b) != channelBindErrorType {
		return b, false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.Contains(stun.AttrNonce) {
		return b, false
	}
	var code stun.ErrorCodeAttribute
	if code.GetFrom(m) != nil || code.Code != stun.CodeUnauthorized {
		return b, false
	}
	out, err := stun.Build(&stun.Message{TransactionID: m.TransactionID}, m.Type,
		&stun.ErrorCodeAttribute{Code: stun.CodeForbidden, Reason: []byte("Forbidden")})
	if err != nil {
		return b, false
	}
	return out.Raw, true
}

// clientPacketConn wraps a UDP listener socket. With batch set, reads are
// served from recvmmsg batches (udpbatch.go); tests leave it nil to wrap a
// fake socket.
type clientPacketConn struct {
	net.PacketConn
	batch   *recvBatch
	inspect func(raw []byte, client, local net.Addr)
}

func (c *clientPacketConn) ReadFrom(p []byte) (n int, addr net.Addr, err error) {
	if c.batch != nil {
		n, addr, err = c.batch.ReadFrom(p)
	} else {
		n, addr, err = c.PacketConn.ReadFrom(p)
	}
	if err == nil && isSTUNRequest(p[:n]) {
		c.inspect(p[:n], addr, c.LocalAddr())
	}
	return n, addr, err
}

func (c *clientPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if fixed, changed := fixChannelBindForbidden(p); changed {
		if _, err := c.PacketConn.WriteTo(fixed, addr); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

// clientListener wraps a TCP, TLS or DTLS listener.
type clientListener struct {
	net.Listener
	inspect func(raw []byte, client, local net.Addr)
	// datagram is set for DTLS: every Read returns whole messages, and
	// ChannelData need not be padded, so no stream framing applies.
	datagram bool
}

func (l *clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &clientStreamConn{Conn: c, inspect: l.inspect, datagram: l.datagram}, nil
}

// tlsHandshakeTimeout bounds a TLS handshake, so a client that connects and
// says nothing does not hold a goroutine forever.
const tlsHandshakeTimeout = 10 * time.Second

// clientStreamConn wraps one client connection. pion frames the byte stream
// itself; frameObserver follows the same framing to find STUN requests.
type clientStreamConn struct {
	net.Conn
	inspect   func(raw []byte, client, local net.Addr)
	observer  frameObserver
	datagram  bool
	handshook bool
}

func (c *clientStreamConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	switch {
	case n > 0 && c.datagram:
		if isSTUNRequest(p[:n]) {
			c.inspect(p[:n], c.RemoteAddr(), c.LocalAddr())
		}
	case n > 0:
		c.observer.feed(p[:n], func(req []byte) { c.inspect(req, c.RemoteAddr(), c.LocalAddr()) })
	}
	return n, err
}

func (c *clientStreamConn) Write(p []byte) (int, error) {
	if fixed, changed := fixChannelBindForbidden(p); changed {
		if _, err := c.Conn.Write(fixed); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// handshaker is a *tls.Conn or a *dtls.Conn.
type handshaker interface {
	HandshakeContext(context.Context) error
}

// handshake completes a TLS or DTLS handshake with a deadline. Both would
// otherwise run lazily inside the first Read with no deadline at all (pion
// adds one only for a bare *tls.Conn, a type our wrapper hides from it).
func (c *clientStreamConn) handshake() error {
	if c.handshook {
		return nil
	}
	c.handshook = true
	h, ok := c.Conn.(handshaker)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	defer cancel()
	return h.HandshakeContext(ctx)
}

// frameObserver follows TURN framing over a stream (RFC 6062/8656: STUN
// messages and ChannelData padded to 4 bytes) without changing it, and
// hands each complete STUN request to a callback. ChannelData payloads are
// skipped, not copied. Once the stream stops being TURN (ConnectionBind
// turns it into raw peer data, or garbage arrives) it stops looking.
type frameObserver struct {
	header  []byte // the first 4 bytes of the next frame, while incomplete
	skip    int    // bytes of the current frame still to pass unseen
	collect []byte // the STUN request being collected
	want    int    // its full length
	stopped bool
}

func (o *frameObserver) feed(b []byte, onRequest func([]byte)) {
	for len(b) > 0 && !o.stopped {
		switch {
		case o.skip > 0:
			n := min(o.skip, len(b))
			o.skip -= n
			b = b[n:]
		case o.want > 0:
			n := min(o.want-len(o.collect), len(b))
			o.collect = append(o.collect, b[:n]...)
			b = b[n:]
			if len(o.collect) == o.want {
				req := o.collect
				o.collect, o.want = nil, 0
				onRequest(req)
				if isConnectionBind(req) {
					o.stopped = true
				}
			}
		default:
			n := min(4-len(o.header), len(b))
			o.header = append(o.header, b[:n]...)
			b = b[n:]
			if len(o.header) == 4 {
				o.startFrame()
			}
		}
	}
}

// startFrame reads a complete 4-byte frame header and decides what to do
// with the frame's remaining bytes.
func (o *frameObserver) startFrame() {
	h := o.header
	o.header = o.header[:0]
	length := int(binary.BigEndian.Uint16(h[2:]))
	switch {
	case h[0]&0xc0 == 0x40: // ChannelData: 4-byte header, payload padded to 4
		o.skip = (length + 3) &^ 3
	case h[0]&0xc0 == 0 && binary.BigEndian.Uint16(h)&0x0110 == 0: // STUN request
		o.want = stunHeaderSize + length
		o.collect = append(make([]byte, 0, o.want), h...)
	case h[0]&0xc0 == 0: // other STUN message (indication)
		o.skip = stunHeaderSize - 4 + length
	default:
		o.stopped = true
	}
}

func isConnectionBind(req []byte) bool {
	return stun.MessageType{Method: stun.MethodConnectionBind, Class: stun.ClassRequest}.Value() == binary.BigEndian.Uint16(req)
}
