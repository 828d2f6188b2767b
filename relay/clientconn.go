package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// Client-facing sockets are wrapped so that pion only ever sees checked,
// whole messages, and so that turnpike decides first what each one costs:
//
//   - Framing (framing.go): every datagram and every frame of a TCP or TLS
//     stream is checked against the TURN framing rules before pion reads
//     it; streams are cut into frames here, with a deadline per frame.
//   - The gate (gate.go): every STUN message passes it before pion handles
//     it. It may answer the client itself (reply) and drop the message, or
//     let pion have it.
//   - Answers: pion's answers pass answer() on the way out, which corrects
//     the ones pion gets wrong (see fixChannelBindForbidden).
//   - Connections (connlimits.go): stream connections are capped per client
//     address and in total, and the accept loop outlives accept errors.

const (
	stunHeaderSize = 20
	magicCookie    = 0x2112A442
)

// gateFunc sees one whole STUN message from client (arrived on local)
// before pion does. It returns whether pion should handle it; reply sends
// an answer of the gate's own on the same socket or connection. msg is only
// valid during the call; the gate may rewrite it in place, and pion then
// handles the rewritten message. The capacity of msg past its length is
// scratch space the gate may grow the message into: the length in the
// STUN header is the length pion is handed (forwardedLength).
type gateFunc func(msg []byte, client, local net.Addr, reply func([]byte)) (forward bool)

// edge is what every client-facing wrapper shares: the gate, the counters
// of refused frames, and the relay's hooks for streams.
type edge struct {
	gate gateFunc
	// signAnswer signs an answer to client whose request the gate verified
	// (signing.go); nil in wrapper tests.
	signAnswer func(b []byte, client net.Addr) []byte
	// noteAnswer sees each of pion's answers first (reservations.go); nil
	// in wrapper tests.
	noteAnswer   func(b []byte)
	rejectFrame  func(reason string)
	closeConn    func(reason string)
	refuseConn   func(reason string, err error)
	listenerDied func(addr net.Addr, err error)
	// limits returns the connection limits in force (hot-reloadable).
	limits func() connLimits
	// holdsAllocation reports whether a stream connection carries an
	// allocation, which exempts it from the idle timeout.
	holdsAllocation func(client, local net.Addr) bool
	conns           *connLimiter
}

// connLimits are the stream connection limits of the current config.
type connLimits struct {
	perSource, total    int
	firstMessage, idle  time.Duration
	tlsHandshakeTimeout time.Duration
}

// channelBindErrorType is the message type of a ChannelBind error response.
var channelBindErrorType = stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse).Value()

// connectionBindSuccessType is the answer after which a stream carries raw
// peer data (RFC 6062 section 5.4).
var connectionBindSuccessType = stun.NewType(stun.MethodConnectionBind, stun.ClassSuccessResponse).Value()

// fixChannelBindForbidden turns pion's "401 without NONCE" answer to a
// ChannelBind (its answer to a peer the PermissionHandler refused) into 403
// (RFC 8656 section 11.2); pion v5.1.2 answers 401, which clients take as
// "retry with credentials". A genuine 401 (missing or stale credentials)
// carries a NONCE and is kept.
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

// answer is every answer pion sends client, corrected where pion is wrong
// and signed where pion left it unsigned.
func (e *edge) answer(b []byte, client net.Addr) []byte {
	if fixed, changed := fixChannelBindForbidden(b); changed {
		b = fixed
	}
	if e.noteAnswer != nil {
		e.noteAnswer(b)
	}
	if e.signAnswer != nil {
		b = e.signAnswer(b, client)
	}
	return b
}

// clientPacketConn wraps a UDP listener socket. With batch set, reads are
// served from recvmmsg batches (udpbatch.go); tests leave it nil to wrap a
// fake socket.
type clientPacketConn struct {
	net.PacketConn
	batch *recvBatch
	edge  *edge
}

// ReadFrom returns the next datagram pion should handle: invalid datagrams
// are counted and dropped, and STUN messages pass the gate first.
func (c *clientPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		var n int
		var addr net.Addr
		var err error
		if c.batch != nil {
			n, addr, err = c.batch.ReadFrom(p)
		} else {
			n, addr, err = c.PacketConn.ReadFrom(p)
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				c.edge.listenerDied(c.LocalAddr(), err)
			}
			return n, addr, err
		}
		kind, reason := checkDatagram(p[:n])
		if reason != "" {
			c.edge.rejectFrame(reason)
			continue
		}
		if kind != frameSTUN {
			return n, addr, nil
		}
		if !c.edge.gate(p[:n], addr, c.LocalAddr(), func(b []byte) { _, _ = c.PacketConn.WriteTo(b, addr) }) {
			continue
		}
		return forwardedLength(p), addr, nil
	}
}

func (c *clientPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if _, err := c.PacketConn.WriteTo(c.edge.answer(p, addr), addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// clientListener wraps a TCP, TLS or DTLS listener.
type clientListener struct {
	net.Listener
	edge   *edge
	closed atomic.Bool
	// datagram is set for DTLS: every Read returns one whole message, and
	// ChannelData need not be padded, so no stream framing applies.
	datagram bool
}

// Accept returns the next connection within the limits. It returns an
// error only when the listener is closed (or broken beyond retrying):
// pion's accept loop stops for good at the first error.
func (l *clientListener) Accept() (net.Conn, error) {
	backoff := time.Duration(0)
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.closed.Load() {
				return nil, err
			}
			if !retryableAcceptError(err) {
				if !errors.Is(err, net.ErrClosed) {
					l.edge.listenerDied(l.Addr(), err)
				}
				return nil, err
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			l.edge.refuseConn(connAcceptError, err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		_, src, ok := addrPort(c.RemoteAddr())
		if !ok {
			_ = c.Close()
			continue
		}
		lim := l.edge.limits()
		if reason := l.edge.conns.acquire(src.Addr(), lim.perSource, lim.total); reason != "" {
			_ = c.Close()
			l.edge.refuseConn(reason, nil)
			continue
		}
		sc := &clientStreamConn{Conn: c, edge: l.edge, datagram: l.datagram, release: func() { l.edge.conns.release(src.Addr()) }}
		sc.framer = streamFramer{conn: c, timeout: sc.frameTimeout, keepIdle: sc.keepIdle}
		return sc, nil
	}
}

func (l *clientListener) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

// clientStreamConn wraps one client connection of a TCP, TLS or DTLS
// listener. pion reads it through its own framing, which then always finds
// exactly one frame per Read.
type clientStreamConn struct {
	net.Conn
	edge     *edge
	datagram bool
	framer   streamFramer
	release  func()

	handshook   bool
	closeReason string // why the relay ends this connection, once
	closeOnce   sync.Once
	// passthrough is set once a ConnectionBind succeeded: from then on the
	// stream is a peer's raw TCP data (RFC 6062), copied as it comes.
	passthrough atomic.Bool
	pending     []byte // raw data read past the ConnectionBind request
}

func (c *clientStreamConn) Read(p []byte) (int, error) {
	if c.passthrough.Load() {
		return c.readRaw(p)
	}
	if err := c.handshake(); err != nil {
		c.ending(connHandshake)
		return 0, err
	}
	for {
		msg, err := c.nextMessage(p)
		if err != nil {
			return 0, c.failed(err)
		}
		if msg == nil {
			continue // dropped
		}
		n := copy(p, msg)
		if msg[0]>>6 != 0 {
			return n, nil
		}
		// The gate works on pion's buffer, not on the framer's: past the
		// message in the framer's lies the next frame.
		if !c.edge.gate(p[:n], c.RemoteAddr(), c.LocalAddr(), c.reply) {
			continue
		}
		return forwardedLength(p), nil
	}
}

// forwardedLength is the length of the STUN message at the start of p as
// the gate left it (it may have grown it).
func forwardedLength(p []byte) int {
	return min(len(p), stunHeaderSize+int(binary.BigEndian.Uint16(p[2:4])))
}

// nextMessage reads one message: a frame of the stream, or for DTLS one
// datagram. It returns nil, nil for a DTLS datagram it dropped.
func (c *clientStreamConn) nextMessage(p []byte) ([]byte, error) {
	if !c.datagram {
		return c.framer.next()
	}
	if err := c.framer.setDeadline(); err != nil {
		return nil, err
	}
	n, err := c.Conn.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) && c.keepIdle() {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c.framer.seenFrame = true
	if _, reason := checkDatagram(p[:n]); reason != "" {
		c.edge.rejectFrame(reason)
		return nil, nil
	}
	return padChannelData(p, n), nil
}

// padChannelData pads an unpadded ChannelData datagram to 4 bytes in place,
// because pion's stream framing (which it applies to DTLS too) expects the
// padding and would otherwise wait for bytes that never come.
func padChannelData(p []byte, n int) []byte {
	if p[0]>>6 != 0b01 {
		return p[:n]
	}
	padded := channelDataHeaderSize + (int(binary.BigEndian.Uint16(p[2:4]))+3)&^3
	switch {
	case padded <= n:
		return p[:padded] // bytes past the padding would start a bogus next frame
	case padded > len(p):
		return p[:n]
	}
	clear(p[n:padded])
	return p[:padded]
}

// failed counts why a stream ends and returns the error for pion, which
// then deletes the connection's allocation and closes it.
func (c *clientStreamConn) failed(err error) error {
	var bad errFrameRejected
	switch {
	case errors.As(err, &bad):
		c.edge.rejectFrame(bad.reason)
		c.ending(connBadFrame)
	case errors.Is(err, os.ErrDeadlineExceeded):
		if c.framer.seenFrame {
			c.ending(connIdle)
		} else {
			c.ending(connFirstTimeout)
		}
	}
	return err
}

// ending records the reason the relay closes this connection; the first
// reason counts.
func (c *clientStreamConn) ending(reason string) {
	if c.closeReason == "" {
		c.closeReason = reason
		c.edge.closeConn(reason)
	}
}

// frameTimeout is the streamFramer's deadline for the next frame.
func (c *clientStreamConn) frameTimeout(first bool) time.Duration {
	lim := c.edge.limits()
	if first {
		return lim.firstMessage
	}
	return lim.idle
}

func (c *clientStreamConn) keepIdle() bool {
	return c.edge.holdsAllocation(c.RemoteAddr(), c.LocalAddr())
}

// readRaw serves a ConnectionBind data connection: what the framer read
// past the request first, then the stream itself, with no deadline.
func (c *clientStreamConn) readRaw(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// reply sends the gate's own answer.
func (c *clientStreamConn) reply(b []byte) { _, _ = c.Conn.Write(b) }

func (c *clientStreamConn) Write(p []byte) (int, error) {
	if c.passthrough.Load() {
		return c.Conn.Write(p)
	}
	out := c.edge.answer(p, c.RemoteAddr())
	if len(out) >= stunHeaderSize && binary.BigEndian.Uint16(out) == connectionBindSuccessType && !c.datagram {
		// pion copies raw data from this connection as soon as the answer
		// is out; whatever the framer read past the request is the start.
		c.pending = append([]byte(nil), c.framer.buffered()...)
		_ = c.Conn.SetReadDeadline(time.Time{})
		c.passthrough.Store(true)
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *clientStreamConn) Close() error {
	c.closeOnce.Do(c.release)
	return c.Conn.Close()
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
	ctx, cancel := context.WithTimeout(context.Background(), c.edge.limits().tlsHandshakeTimeout)
	defer cancel()
	return h.HandshakeContext(ctx)
}
