package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// growingGate appends an 8-byte attribute to every STUN message, as the
// gate does when it writes a LIFETIME into a request that had none, and
// records what it saw.
func growingGate(seen *[][]byte) func(msg []byte) bool {
	return func(msg []byte) bool {
		*seen = append(*seen, append([]byte(nil), msg...))
		grown := append(msg, 0x00, 0x0d, 0x00, 0x04, 0, 0, 2, 0x58) // LIFETIME 600
		binary.BigEndian.PutUint16(grown[2:4], uint16(len(grown)-stunHeaderSize))
		return true
	}
}

// TestGateMayGrowTheMessage: pion is handed the message as the gate left
// it, grown into pion's buffer, and on a stream the next frame stays
// whole.
func TestGateMayGrowTheMessage(t *testing.T) {
	first := append(stunHead(0x0003, 8), 0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0) // Allocate, REQUESTED-TRANSPORT
	second := stunHead(0x0004, 0)                                             // Refresh
	want := append(append([]byte(nil), first...), 0x00, 0x0d, 0x00, 0x04, 0, 0, 2, 0x58)
	binary.BigEndian.PutUint16(want[2:4], 16)

	t.Run("UDP", func(t *testing.T) {
		var seen [][]byte
		e, _ := testEdge(growingGate(&seen))
		c := &clientPacketConn{PacketConn: &fakePacketConn{datagram: first, from: &net.UDPAddr{}}, edge: e}
		buf := make([]byte, 1600)
		n, _, err := c.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("pion read %x, %v; want %x", buf[:n], err, want)
		}
	})
	t.Run("stream", func(t *testing.T) {
		var seen [][]byte
		e, _ := testEdge(growingGate(&seen))
		conn := addrConn{&chunkConn{data: append(append([]byte(nil), first...), second...), piece: 4096}}
		c := &clientStreamConn{Conn: conn, edge: e}
		c.framer = streamFramer{conn: conn, timeout: noTimeout, keepIdle: never}
		buf := make([]byte, 1600)
		n, err := c.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("pion read %x, %v; want %x", buf[:n], err, want)
		}
		if _, err := c.Read(buf); err != nil || len(seen) != 2 || !bytes.Equal(seen[1], second) {
			t.Fatalf("the next frame reached the gate as %x (%v); want %x", seen[len(seen)-1], err, second)
		}
	})
}

// addrConn gives a chunkConn addresses.
type addrConn struct{ *chunkConn }

func (addrConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }
func (addrConn) LocalAddr() net.Addr  { return &net.TCPAddr{} }
