package relay

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/unix"
)

// batchedPair is a listener wrapped like the relay's (recvmmsg batches) and
// a client socket that sends to it.
func batchedPair(t *testing.T, gate func(msg []byte) bool) (cc *clientPacketConn, client *net.UDPConn, rejected *[]string) {
	t.Helper()
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e, rejected := testEdge(gate)
	cc, err = newClientPacketConn(ln, e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	client, err = net.DialUDP("udp4", nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return cc, client, rejected
}

// TestBatchedReadFrom: datagrams queued before a read come back one per
// ReadFrom, in order, whole, with the sender's address; only the STUN
// request among them passes the gate; a datagram longer than the largest
// frame is dropped and counted.
func TestBatchedReadFrom(t *testing.T) {
	var gated [][]byte
	cc, client, rejected := batchedPair(t, func(msg []byte) bool { gated = append(gated, bytes.Clone(msg)); return true })
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	var sent [][]byte
	for i := range 2*batchSize + 5 { // more than two batches
		d := append([]byte{0x40, 0x00, 0x00, byte(i)}, bytes.Repeat([]byte{byte(i)}, i)...)
		if i == 7 {
			d = req.Raw
		}
		sent = append(sent, d)
	}
	tooLarge := append([]byte{0x40, 0x00, 0x0b, 0xb4}, make([]byte, 2996)...) // longer than a batch slot and than buf
	for i, d := range sent {
		if i == 3 {
			if _, err := client.Write(tooLarge); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := client.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1600)
	for i, want := range sent {
		n, from, err := cc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: got %d bytes %x..., want %d bytes", i, n, buf[:min(n, 8)], len(want))
		}
		if from.String() != client.LocalAddr().String() {
			t.Fatalf("datagram %d from %v, want %v", i, from, client.LocalAddr())
		}
	}
	if len(gated) != 1 || !bytes.Equal(gated[0], req.Raw) {
		t.Errorf("gated %d datagrams, want only the STUN request", len(gated))
	}
	if len(*rejected) != 1 || (*rejected)[0] != frameTooLarge {
		t.Errorf("rejected frames %q, want one %q", *rejected, frameTooLarge)
	}
}

// TestBatchedReadFromDoesNotAllocate extends the hot-path guard to the
// batched listener read: once a source address is cached, serving a
// datagram allocates nothing, whether it comes from memory or needs a new
// recvmmsg.
func TestBatchedReadFromDoesNotAllocate(t *testing.T) {
	cc, client, _ := batchedPair(t, func([]byte) bool { t.Fatal("ChannelData gated"); return false })
	channelData := append([]byte{0x40, 0x00, 0x00, 0x64}, make([]byte, 100)...)
	const runs = 500
	for range runs + 1 { // AllocsPerRun calls once more to warm up
		if _, err := client.Write(channelData); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1600)
	allocs := testing.AllocsPerRun(runs, func() {
		if _, _, err := cc.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per datagram, want 0", allocs)
	}
}

// TestBatchedReadFromUnblocksOnClose: pion stops a listener's read loop by
// closing the socket; a read waiting in the netpoller must return.
func TestBatchedReadFromUnblocksOnClose(t *testing.T) {
	cc, _, _ := batchedPair(t, nil)
	done := make(chan error, 1)
	go func() {
		_, _, err := cc.ReadFrom(make([]byte, 1600))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	_ = cc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still blocked after Close")
	}
}

func TestSocketBuffers(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	setSocketBuffers(c, listenerBufferSize)
	if os.Geteuid() != 0 {
		t.Skip("without CAP_NET_ADMIN the sysctl net.core.rmem_max caps the buffers")
	}
	rc, _ := c.SyscallConn()
	_ = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_RCVBUF, unix.SO_SNDBUF} {
			// Linux reports twice the size set (it adds its bookkeeping).
			if got, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt); err != nil || got < listenerBufferSize {
				t.Errorf("socket option %d: %d (%v), want at least %d", opt, got, err, listenerBufferSize)
			}
		}
	})
}

// TestListenerWriteTo: answers to clients (ChannelData from peers) go out
// through the wrapped listener, also from a dual-stack socket to an IPv4
// client, and that send path allocates nothing.
func TestListenerWriteTo(t *testing.T) {
	ln, err := net.ListenUDP("udp", &net.UDPAddr{}) // all addresses: dual-stack
	if err != nil {
		t.Fatal(err)
	}
	e, _ := testEdge(nil)
	cc, err := newClientPacketConn(ln, e)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	to := client.LocalAddr().(*net.UDPAddr)
	channelData := append([]byte{0x40, 0x00, 0x00, 0x04}, 1, 2, 3, 4)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := cc.WriteTo(channelData, to); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per datagram sent, want 0", allocs)
	}
	buf := make([]byte, 64)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := client.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], channelData) {
		t.Fatalf("client got %x, %v; want %x", buf[:n], err, channelData)
	}
	if _, err := cc.WriteTo(channelData, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); err == nil {
		t.Error("WriteTo a TCP address succeeded")
	}
}
