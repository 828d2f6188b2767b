package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"time"
)

// Framing: what a client-facing message must look like before anything
// else reads it.
//
// Over UDP and DTLS every datagram is one message; over TCP and TLS the
// byte stream carries STUN messages and ChannelData back to back (RFC 8656
// section 12.5, ChannelData padded to 4 bytes). pion's own stream framing
// computes a frame's size in 16 bits, so a length field of 0xFFEC wraps to
// a zero-byte frame and its read loop spins on it forever. The relay
// therefore frames every stream itself (streamFramer) and hands pion whole,
// checked frames only: pion's framing then always finds exactly one frame.

// maxFrameSize is the largest frame the relay accepts. pion reads into a
// 1600-byte buffer and drops anything that fills it, so a larger frame
// could never be handled anyway; 1596 is the largest multiple of 4 below.
const maxFrameSize = 1596

// Reasons a frame is refused; the "reason" label of
// turnpike_relay_frames_rejected_total.
const (
	frameBadType   = "bad_type"   // neither STUN (0b00) nor ChannelData (0b01)
	frameBadLength = "bad_length" // a STUN length that is not a multiple of 4, or disagrees with the datagram
	frameTooLarge  = "too_large"  // more than maxFrameSize
	frameBadCookie = "bad_cookie" // a STUN header without the magic cookie (other than a classic Binding request)
	frameTruncated = "truncated"  // a datagram shorter than its header says
	// frameStandInSource: a datagram from a stand-in client address
	// (dual.go), which only a forged source can carry.
	frameStandInSource = "stand_in_source"
)

var frameRejectReasons = []string{frameBadType, frameBadLength, frameTooLarge, frameBadCookie, frameTruncated, frameStandInSource}

const channelDataHeaderSize = 4

// frameKind is what the first two bits of a frame say it is.
type frameKind int

const (
	frameSTUN frameKind = iota
	frameChannelData
)

// frameSize reads a frame's 4-byte head (type and length) and returns the
// size of the whole frame on a stream: STUN header plus body, or
// ChannelData header plus its payload padded to 4 bytes. reason is set when
// the head alone shows the frame is invalid.
func frameSize(head []byte) (size int, kind frameKind, reason string) {
	length := int(binary.BigEndian.Uint16(head[2:4]))
	switch head[0] >> 6 {
	case 0b00:
		if length%4 != 0 {
			return 0, frameSTUN, frameBadLength
		}
		size, kind = stunHeaderSize+length, frameSTUN
	case 0b01:
		// Channels 0x4000-0x7FFF: RFC 8656 narrowed new bindings to
		// 0x4000-0x4FFF, but RFC 5766 clients (coturn's among them) still
		// bind up to 0x7FFF, and pion accepts them.
		size, kind = channelDataHeaderSize+(length+3)&^3, frameChannelData
	default:
		return 0, 0, frameBadType
	}
	if size > maxFrameSize {
		return 0, kind, frameTooLarge
	}
	return size, kind, ""
}

// checkDatagram checks one UDP or DTLS datagram. A STUN message must fill
// the datagram exactly; ChannelData may be followed by padding (RFC 8656
// section 12.5 allows it but does not require it over UDP).
func checkDatagram(b []byte) (kind frameKind, reason string) {
	if len(b) < channelDataHeaderSize {
		return 0, frameTruncated
	}
	size, kind, reason := frameSize(b)
	if reason != "" {
		return kind, reason
	}
	length := int(binary.BigEndian.Uint16(b[2:4]))
	switch kind {
	case frameSTUN:
		if len(b) < stunHeaderSize {
			return kind, frameTruncated
		}
		// The one message allowed without the cookie: classic.go answers it.
		if binary.BigEndian.Uint32(b[4:8]) != magicCookie && !isClassicBindingRequest(b) {
			return kind, frameBadCookie
		}
		if len(b) != size {
			return kind, frameBadLength
		}
	case frameChannelData:
		if len(b) < channelDataHeaderSize+length {
			return kind, frameTruncated
		}
	}
	return kind, ""
}

// errFrameRejected ends a stream whose next frame is invalid: past a bad
// frame there is no telling where the next one starts.
type errFrameRejected struct{ reason string }

func (e errFrameRejected) Error() string { return "invalid TURN frame: " + e.reason }

// streamFramer cuts a TCP or TLS byte stream into checked frames. It reads
// with a deadline per frame, so a client that sends half a header and
// stops (or trickles a byte at a time) is closed when the deadline passes,
// not held forever. It keeps at most one frame (plus one read's worth of
// the next) in memory.
type streamFramer struct {
	conn net.Conn
	// timeout is how long the next whole frame may take to arrive (first:
	// no frame has arrived yet); zero means no limit.
	timeout func(first bool) time.Duration
	// keepIdle says whether a connection that sent nothing for a whole
	// timeout may stay: one that holds an allocation keeps it alive by
	// Refresh at its own pace, and must not lose it to our timer.
	keepIdle func() bool

	buf        []byte // buffered bytes: buf[start:end]
	start, end int
	seenFrame  bool
}

// next returns the next whole frame. The slice is valid until the next
// call. Errors are the connection's, a deadline's, or errFrameRejected.
func (f *streamFramer) next() ([]byte, error) {
	if f.buf == nil {
		f.buf = make([]byte, 2*maxFrameSize)
	}
	if err := f.setDeadline(); err != nil {
		return nil, err
	}
	if err := f.fill(channelDataHeaderSize); err != nil {
		return nil, err
	}
	size, kind, reason := frameSize(f.buf[f.start:])
	if reason != "" {
		return nil, errFrameRejected{reason}
	}
	if kind == frameSTUN {
		if err := f.fill(8); err != nil {
			return nil, err
		}
		head := f.buf[f.start:]
		if binary.BigEndian.Uint32(head[4:8]) != magicCookie && !isClassicBindingRequest(head) {
			return nil, errFrameRejected{frameBadCookie}
		}
	}
	if err := f.fill(size); err != nil {
		return nil, err
	}
	frame := f.buf[f.start : f.start+size]
	f.start += size
	f.seenFrame = true
	return frame, nil
}

// fill reads until at least n bytes of the current frame are buffered.
func (f *streamFramer) fill(n int) error {
	if f.start+n > len(f.buf) {
		f.end = copy(f.buf, f.buf[f.start:f.end])
		f.start = 0
	}
	for f.end-f.start < n {
		m, err := f.conn.Read(f.buf[f.end:])
		f.end += m
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && f.end == f.start && f.keepIdle():
			if err := f.setDeadline(); err != nil {
				return err
			}
		case f.end-f.start >= n:
			return nil // the frame is whole; the error comes back on the next read
		default:
			return err
		}
	}
	return nil
}

// setDeadline gives the next frame the time timeout grants.
func (f *streamFramer) setDeadline() error {
	d := f.timeout(!f.seenFrame)
	if d <= 0 {
		return f.conn.SetReadDeadline(time.Time{})
	}
	return f.conn.SetReadDeadline(time.Now().Add(d))
}

// buffered returns (and forgets) what was read past the last frame: after
// ConnectionBind the stream is raw peer data, which starts there.
func (f *streamFramer) buffered() []byte {
	b := f.buf[f.start:f.end]
	f.start, f.end = 0, 0
	return b
}
