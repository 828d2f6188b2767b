package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// testEdge is an edge for wrapper tests: gate (nil: forward everything)
// decides, and the reasons of refused frames are recorded in order.
func testEdge(gate func(msg []byte) bool) (e *edge, rejected *[]string) {
	rejected = &[]string{}
	return &edge{
		gate: func(msg []byte, _, _ net.Addr, _ func([]byte)) bool {
			return gate == nil || gate(msg)
		},
		closeConn:    func(string) {},
		refuseConn:   func(string, error) {},
		listenerDied: func(net.Addr, error) {},
		limits: func() connLimits {
			return connLimits{firstMessage: time.Minute, idle: time.Minute, tlsHandshakeTimeout: time.Minute}
		},
		holdsAllocation: func(net.Addr, net.Addr) bool { return false },
		conns:           newConnLimiter(),
		rejectFrame:     func(reason string) { *rejected = append(*rejected, reason) },
	}, rejected
}

func stunHead(msgType, length uint16) []byte {
	b := make([]byte, stunHeaderSize)
	binary.BigEndian.PutUint16(b, msgType)
	binary.BigEndian.PutUint16(b[2:], length)
	binary.BigEndian.PutUint32(b[4:], magicCookie)
	return b
}

func TestFrameSize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		head   []byte
		size   int
		reason string
	}{
		{"STUN request", []byte{0x00, 0x01, 0x00, 0x08}, 28, ""},
		{"STUN length not a multiple of 4", []byte{0x00, 0x01, 0x00, 0x06}, 0, frameBadLength},
		// 0xFFEC + 20 wraps to 0 in 16 bits: pion's framing then spins.
		{"STUN length 0xFFEC", []byte{0x00, 0x01, 0xff, 0xec}, 0, frameTooLarge},
		{"STUN length 0xFFFC", []byte{0x00, 0x01, 0xff, 0xfc}, 0, frameTooLarge},
		{"largest STUN", []byte{0x00, 0x01, 0x06, 0x28}, maxFrameSize, ""},
		{"ChannelData padded", []byte{0x40, 0x00, 0x00, 0x05}, 12, ""},
		{"ChannelData 0x4FFF", []byte{0x4f, 0xff, 0x00, 0x00}, 4, ""},
		{"ChannelData length 0xFFFF", []byte{0x40, 0x00, 0xff, 0xff}, 0, frameTooLarge},
		{"RFC 5766 channel 0x7FFF", []byte{0x7f, 0xff, 0x00, 0x04}, 8, ""},
		// Top bits 0b11: pion ignores them and would run a ChannelBind.
		{"type 0xC009", []byte{0xc0, 0x09, 0x00, 0x08}, 0, frameBadType},
		{"type 0x8001", []byte{0x80, 0x01, 0x00, 0x00}, 0, frameBadType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size, _, reason := frameSize(tc.head)
			if size != tc.size || reason != tc.reason {
				t.Errorf("frameSize(%x) = %d, %q; want %d, %q", tc.head, size, reason, tc.size, tc.reason)
			}
		})
	}
}

func TestCheckDatagram(t *testing.T) {
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	noCookie := bytes.Clone(binding)
	noCookie[4] = 0
	allocateNoCookie := bytes.Clone(noCookie)
	allocateNoCookie[1] = 0x03
	for _, tc := range []struct {
		name   string
		b      []byte
		reason string
	}{
		{"Binding request", binding, ""},
		{"short", []byte{0x00, 0x01}, frameTruncated},
		{"STUN header only half there", binding[:12], frameTruncated},
		{"classic Binding request (no cookie)", noCookie, ""},
		{"other STUN without cookie", allocateNoCookie, frameBadCookie},
		{"STUN longer than its length", append(bytes.Clone(binding), 0, 0, 0, 0), frameBadLength},
		{"STUN shorter than its length", stunHead(0x0001, 8), frameBadLength},
		{"ChannelData unpadded", []byte{0x40, 0x00, 0x00, 0x03, 1, 2, 3}, ""},
		{"ChannelData with padding", []byte{0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0}, ""},
		{"ChannelData truncated", []byte{0x40, 0x00, 0x00, 0x08, 1, 2, 3}, frameTruncated},
		{"top bits 0b11", stunHead(0xc009, 0), frameBadType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, reason := checkDatagram(tc.b); reason != tc.reason {
				t.Errorf("checkDatagram = %q, want %q", reason, tc.reason)
			}
		})
	}
}

// chunkConn is a net.Conn whose reads return the stream in pieces of a
// fixed size, then io.EOF.
type chunkConn struct {
	net.Conn
	data  []byte
	piece int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.piece)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkConn) SetReadDeadline(time.Time) error { return nil }

func noTimeout(bool) time.Duration { return 0 }
func never() bool                  { return false }

// TestStreamFramer: frames come out whole and in order however the stream
// is cut, ChannelData with its padding.
func TestStreamFramer(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest), stun.NewUsername("alice")).Raw
	ind := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), stun.NewUsername("x")).Raw
	chanData := []byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0} // 5 bytes padded to 8
	big := append([]byte{0x40, 0x02, 0x06, 0x28}, bytes.Repeat([]byte{7}, 0x628)...)
	frames := [][]byte{chanData, req, ind, big, chanData, req, big, big}
	stream := bytes.Join(frames, nil)
	for _, piece := range []int{1, 3, 7, 64, 1500, 4096} {
		f := streamFramer{conn: &chunkConn{data: stream, piece: piece}, timeout: noTimeout, keepIdle: never}
		for i, want := range frames {
			got, err := f.next()
			if err != nil {
				t.Fatalf("pieces of %d: frame %d: %v", piece, i, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("pieces of %d: frame %d: got %d bytes %x..., want %d bytes", piece, i, len(got), got[:min(8, len(got))], len(want))
			}
		}
		if _, err := f.next(); err != io.EOF {
			t.Errorf("pieces of %d: after the last frame: %v, want EOF", piece, err)
		}
	}
}

// TestStreamFramerRejects: an invalid frame ends the stream with its
// reason, before the framer waits for (or buffers) its body.
func TestStreamFramerRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream []byte
		reason string
	}{
		{"length 0xFFEC", stunHead(0x0001, 0xffec), frameTooLarge},
		{"length 0xFFFF", stunHead(0x0001, 0xffff), frameBadLength},
		// A classic Binding request (type 0x0001) may come without the cookie; nothing else may.
		{"no cookie", append([]byte{0x00, 0x03, 0x00, 0x00, 1, 2, 3, 4}, make([]byte, 12)...), frameBadCookie},
		{"type 0xC001 after a valid frame", append(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, stunHead(0xc001, 0)...), frameBadType},
		{"type 0x8000", []byte{0x80, 0x00, 0x00, 0x04, 1, 2, 3, 4}, frameBadType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := streamFramer{conn: &chunkConn{data: tc.stream, piece: 4096}, timeout: noTimeout, keepIdle: never}
			var err error
			for err == nil {
				_, err = f.next()
			}
			var bad errFrameRejected
			if !errors.As(err, &bad) || bad.reason != tc.reason {
				t.Errorf("got %v, want a rejected frame (%s)", err, tc.reason)
			}
		})
	}
}

// TestStreamFramerDeadlines runs over real TCP: a client that sends half a
// header and stops is cut off by the first-message deadline; a connection
// that sent a frame and then idles is kept exactly while keepIdle says so.
func TestStreamFramerDeadlines(t *testing.T) {
	server, client := tcpPair(t)
	f := streamFramer{conn: server, timeout: func(bool) time.Duration { return 50 * time.Millisecond }, keepIdle: never}
	if _, err := client.Write([]byte{0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half a header: %v, want a deadline error", err)
	}

	server, client = tcpPair(t)
	idleChecks := 0
	f = streamFramer{conn: server, timeout: func(bool) time.Duration { return 20 * time.Millisecond },
		keepIdle: func() bool { idleChecks++; return idleChecks <= 3 }}
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	if _, err := client.Write(binding); err != nil {
		t.Fatal(err)
	}
	if got, err := f.next(); err != nil || !bytes.Equal(got, binding) {
		t.Fatalf("first frame: %x, %v", got, err)
	}
	if _, err := f.next(); !errors.Is(err, os.ErrDeadlineExceeded) || idleChecks != 4 {
		t.Fatalf("idle: %v after %d checks, want a deadline error after 4", err, idleChecks)
	}
}

func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// FuzzStreamFramer: whatever the stream, every frame the framer returns is
// one that frameSize accepts whole, no larger than maxFrameSize, and the
// framer ends (no frame without progress).
func FuzzStreamFramer(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, 7)
	f.Add(stunHead(0x0001, 0xffec), 20)
	f.Add([]byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}, 1)
	f.Add(stunHead(0xc009, 0), 3)
	f.Fuzz(func(t *testing.T, stream []byte, piece int) {
		piece = 1 + max(piece, -piece)%4096
		fr := streamFramer{conn: &chunkConn{data: stream, piece: piece}, timeout: noTimeout, keepIdle: never}
		consumed := 0
		for {
			frame, err := fr.next()
			if err != nil {
				return
			}
			size, _, reason := frameSize(frame)
			if reason != "" || size != len(frame) || len(frame) > maxFrameSize || len(frame) == 0 {
				t.Fatalf("returned frame of %d bytes %x...: frameSize %d %q", len(frame), frame[:min(8, len(frame))], size, reason)
			}
			if !bytes.Equal(frame, stream[consumed:consumed+len(frame)]) {
				t.Fatal("frame is not the next bytes of the stream")
			}
			consumed += len(frame)
		}
	})
}

// FuzzCheckDatagram: an accepted datagram is one pion's framing reads as
// exactly one frame of the same kind.
func FuzzCheckDatagram(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x03, 1, 2, 3})
	f.Add(stunHead(0x0001, 0xffec))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, reason := checkDatagram(b)
		if reason != "" {
			return
		}
		size, k, r := frameSize(b)
		if r != "" || k != kind {
			t.Fatalf("accepted datagram has frameSize %d %q kind %v", size, r, k)
		}
		if kind == frameSTUN && size != len(b) {
			t.Fatalf("accepted STUN datagram of %d bytes, header says %d", len(b), size)
		}
		p := make([]byte, 1600)
		n := copy(p, b)
		if padded := padChannelData(p, n); kind == frameChannelData && len(padded) != size {
			t.Fatalf("padded ChannelData is %d bytes, frame is %d", len(padded), size)
		}
	})
}
