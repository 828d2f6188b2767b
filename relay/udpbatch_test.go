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
func batchedPair(t *testing.T, inspect func(raw []byte, client, local net.Addr)) (*clientPacketConn, *net.UDPConn) {
	t.Helper()
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := newClientPacketConn(ln, inspect)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	client, err := net.DialUDP("udp4", nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return cc, client
}

// TestBatchedReadFrom: datagrams queued before a read come back one per
// ReadFrom, in order, whole, with the sender's address; only the STUN
// request among them is inspected; a datagram longer than the caller's
// buffer is truncated to it, as net.UDPConn does.
func TestBatchedReadFrom(t *testing.T) {
	var inspected [][]byte
	cc, client := batchedPair(t, func(raw []byte, _, _ net.Addr) { inspected = append(inspected, bytes.Clone(raw)) })
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	var sent [][]byte
	for i := range 2*batchSize + 5 { // more than two batches
		d := append([]byte{0x40, 0x00, 0x00, byte(i)}, bytes.Repeat([]byte{byte(i)}, i)...)
		if i == 7 {
			d = req.Raw
		}
		sent = append(sent, d)
	}
	sent = append(sent, make([]byte, 3000)) // longer than a batch slot and than buf
	for _, d := range sent {
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
		if len(want) > len(buf) {
			want = want[:len(buf)]
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: got %d bytes %x..., want %d bytes", i, n, buf[:min(n, 8)], len(want))
		}
		if from.String() != client.LocalAddr().String() {
			t.Fatalf("datagram %d from %v, want %v", i, from, client.LocalAddr())
		}
	}
	if len(inspected) != 1 || !bytes.Equal(inspected[0], req.Raw) {
		t.Errorf("inspected %d datagrams, want only the STUN request", len(inspected))
	}
}

// TestBatchedReadFromDoesNotAllocate extends the hot-path guard to the
// batched listener read: once a source address is cached, serving a
// datagram allocates nothing, whether it comes from memory or needs a new
// recvmmsg.
func TestBatchedReadFromDoesNotAllocate(t *testing.T) {
	cc, client := batchedPair(t, func([]byte, net.Addr, net.Addr) { t.Fatal("ChannelData inspected") })
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
	cc, _ := batchedPair(t, nil)
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
	cc, err := newClientPacketConn(ln, nil)
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
