//go:build soak

package adversarial

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/benchlock"
)

// The soak (`make soak`): ALLOCS UDP allocations (default 10,000) relay
// RATE packets/s (default 20,000, each echoed back by the peer, so the
// relay moves twice that: about half of what one core of the relay
// delivers, docs/performance.md) for DURATION (default 10m). For the first
// half, a flood runs from another address: malformed datagrams, half-open
// TCP connections and wrong-password Allocates. It reports the loss of the
// legitimate traffic, the relay's RSS, goroutines and file descriptors at
// the start, when the flood stops and at the end, and whether the relay is
// still ready; it fails when the relay is not, when the loss is above
// MAX_LOSS (default 0.001, the goal is 0), or when goroutines or RSS grew
// after the flood stopped.
//
//	make soak                                  # 10,000 allocations, 10 minutes
//	ALLOCS=1000 DURATION=60s RATE=5000 make soak

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

func envFloat(t *testing.T, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return f
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// soakStats is what the soak reports about the relay at one moment.
type soakStats struct {
	rss, heap, goroutines float64
	fds                   int
}

func (s soakStats) String() string {
	return fmt.Sprintf("RSS %.1f MB (heap in use %.1f MB), %v goroutines, %d fds", s.rss/1e6, s.heap/1e6, s.goroutines, s.fds)
}

func (r *relayProc) stats(t *testing.T) soakStats {
	return soakStats{rss: r.metric(t, "process_resident_memory_bytes"), heap: r.metric(t, "go_memstats_heap_inuse_bytes"),
		goroutines: r.metric(t, "go_goroutines"), fds: r.openFiles(t)}
}

// soakAlloc is one legitimate allocation: its client, and the STUN
// responses its reader hands to the refresher.
type soakAlloc struct {
	c         *client
	responses chan *stun.Message
}

const soakChannel = 0x4000

func TestSoak(t *testing.T) {
	allocs := envInt(t, "ALLOCS", 10000)
	rate := envInt(t, "RATE", 20000)
	duration := envDuration(t, "DURATION", 10*time.Minute)
	maxLoss := envFloat(t, "MAX_LOSS", 0.001)
	// Its loss and CPU figures mean nothing with another benchmark beside it.
	release, err := benchlock.Hold(os.Stdout, "soak")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	// Its time limit counts from here, not from the wait for another
	// benchmark (make soak runs go test without one): the traffic, and
	// set-up and tear-down of up to tens of thousands of allocations.
	watchdog := time.AfterFunc(duration+90*time.Minute, func() {
		panic(fmt.Sprintf("soak: still running %v after it took the benchmark lock", duration+90*time.Minute))
	})
	defer watchdog.Stop()
	// Sockets: one per allocation here and in the relay (which inherits
	// the limit), and some for the flood and the relay's listeners.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if want := uint64(allocs + 2048); lim.Max < want {
		t.Fatalf("%d allocations need %d file descriptors; the hard limit is %d", allocs, want, lim.Max)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	l := newLab(t, func(cfg *config.Relay) {
		// Twice the allocations: pion picks relay ports at random and gives up
		// (508) after a few taken ones.
		cfg.RelayPortRange = config.PortRange{Min: 20000, Max: 20000 + 2*allocs + 1000}
		cfg.UDPSocketsPerListener = 2
		cfg.Limits.FirstMessageTimeout.Duration = 2 * time.Second
	})

	peer := l.pub.ListenPacket("udp4", peerAddr+":7777").(*net.UDPConn)
	_ = peer.SetReadBuffer(8 << 20)
	var echoed atomic.Int64
	go echo(peer, &echoed)
	peerAP := netip.MustParseAddrPort(peerAddr + ":7777")

	start := time.Now()
	as := setUpAllocations(t, l, allocs, peerAP)
	t.Logf("%d allocations with a channel in %v", allocs, time.Since(start).Round(time.Millisecond))
	before := l.relay.stats(t)

	end := time.Now().Add(duration)
	var received atomic.Int64
	for _, a := range as {
		go readAlloc(a, end.Add(10*time.Second), &received)
	}
	stopFlood := make(chan struct{})
	floodDone := flood(t, l, stopFlood)
	stopRefresh := make(chan struct{})
	go refresh(as, peerAP, stopRefresh)

	var mid soakStats
	sent := sendAtRate(as, rate, end, func() {
		close(stopFlood)
		<-floodDone
		mid = l.relay.stats(t)
	}, time.Now().Add(duration/2))
	close(stopRefresh)
	time.Sleep(2 * time.Second) // the last echoes
	after := l.relay.stats(t)

	lost := sent - received.Load()
	loss := float64(lost) / float64(max(sent, 1))
	t.Logf("soak: %d allocations, %d packets/s offered (x2 relayed with the echo) for %v; flood for the first half", allocs, rate, duration)
	t.Logf("legitimate traffic: %d sent, %d echoed back, %d lost (%.4f %%)", sent, received.Load(), lost, 100*loss)
	// Where it was lost, leg by leg: the relay counts a datagram when it
	// has written it on.
	t.Logf("legs: client sent %d; relay wrote to the peer %v; peer received %d; relay wrote to the clients %v; clients received %d",
		sent, l.relay.metric(t, `turnpike_relay_relayed_packets_total{direction="client_to_peer",transport="udp"}`), echoed.Load(),
		l.relay.metric(t, `turnpike_relay_relayed_packets_total{direction="peer_to_client",transport="udp"}`), received.Load())
	t.Logf("relay at start:       %s", before)
	t.Logf("relay at flood's end: %s", mid)
	t.Logf("relay at end:         %s", after)
	for _, s := range []string{
		`turnpike_relay_frames_rejected_total{reason="bad_type"}`, `turnpike_relay_frames_rejected_total{reason="too_large"}`,
		`turnpike_relay_frames_rejected_total{reason="bad_cookie"}`, `turnpike_relay_frames_rejected_total{reason="bad_length"}`,
		`turnpike_relay_connections_closed_total{reason="first_timeout"}`, `turnpike_relay_connections_closed_total{reason="bad_frame"}`,
		`turnpike_relay_connections_refused_total{reason="per_source"}`, "turnpike_relay_auth_throttled_total",
	} {
		t.Logf("%s %v", s, l.relay.metric(t, s))
	}
	t.Logf("relay log lines: %d", l.relay.logLines())
	ready := l.relay.ready()
	t.Logf("ready at end: %v", ready)

	if !ready {
		t.Error("the relay is not ready at the end")
	}
	if loss > maxLoss {
		t.Errorf("loss %.4f %% is above MAX_LOSS %.4f %%", 100*loss, 100*maxLoss)
	}
	if after.goroutines > mid.goroutines+50 {
		t.Errorf("goroutines grew after the flood stopped: %v -> %v", mid.goroutines, after.goroutines)
	}
	if after.rss > mid.rss*1.1+10e6 {
		t.Errorf("RSS grew after the flood stopped: %.1f -> %.1f MB", mid.rss/1e6, after.rss/1e6)
	}
}

// setUpAllocations opens n UDP sockets in the pub namespace and makes an
// allocation (lifetime one hour, so the soak needs no Refresh) with a
// channel to peer on each, 32 at a time.
func setUpAllocations(t *testing.T, l *lab, n int, peer netip.AddrPort) []*soakAlloc {
	conns := make([]net.Conn, n)
	err := l.pub.Do(func() error {
		for i := range conns {
			c, err := net.Dial("udp4", net.JoinHostPort(nodeAddr, strconv.Itoa(turnPort)))
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	as := make([]*soakAlloc, n)
	var wg sync.WaitGroup
	var failed atomic.Int32
	var firstErr atomic.Value
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c := &client{t: t, conn: conns[i], integrity: stun.NewLongTermIntegrity(labUser, labRealm, labPassword)}
				t.Cleanup(func() { _ = c.conn.Close() })
				if err := allocateWithChannel(c, peer); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				as[i] = &soakAlloc{c: c, responses: make(chan *stun.Message, 1)}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d allocations failed, the first: %v", f, n, firstErr.Load())
	}
	return as
}

// allocateWithChannel makes an allocation with a channel to peer,
// retrying what UDP or a busy relay lost, as a client does.
func allocateWithChannel(c *client, peer netip.AddrPort) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var res *stun.Message
		res, err = c.request(allocateType, udpTransport, rawAttr(stun.AttrLifetime, binary.BigEndian.AppendUint32(nil, 3600)))
		if err == nil && errorCode(res) != 0 && errorCode(res) != int(stun.CodeAllocMismatch) {
			err = fmt.Errorf("allocate: %d", errorCode(res))
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 3; attempt++ {
		if code := c.channelBind(channelBindType, soakChannel, peer); code == 0 {
			return nil
		} else {
			err = fmt.Errorf("channel bind: %d", code)
		}
	}
	return err
}

// echo sends every datagram back where it came from: the peer of every
// allocation.
func echo(conn *net.UDPConn, echoed *atomic.Int64) {
	buf := make([]byte, 2048)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		echoed.Add(1)
		_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

// readAlloc counts the ChannelData that comes back to an allocation and
// hands STUN responses to the refresher, until deadline.
func readAlloc(a *soakAlloc, deadline time.Time, received *atomic.Int64) {
	_ = a.c.conn.SetReadDeadline(deadline)
	buf := make([]byte, 2048)
	for {
		n, err := a.c.conn.Read(buf)
		if err != nil {
			return
		}
		if n >= 4 && buf[0]&0xc0 == 0x40 {
			received.Add(1)
			continue
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() == nil {
			select {
			case a.responses <- m:
			default:
			}
		}
	}
}

// refresh renews every channel (and with it the permission) every four
// minutes, as a client does; the allocation itself lives an hour.
func refresh(as []*soakAlloc, peer netip.AddrPort, stop <-chan struct{}) {
	tick := time.NewTicker(4 * time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for _, a := range as {
			for attempt := 0; attempt < 2; attempt++ {
				m := a.c.build(channelBindType, rawAttr(stun.AttrChannelNumber, []byte{soakChannel >> 8, soakChannel & 0xff, 0, 0}), xorPeer(peer))
				if a.c.write(m.Raw) != nil {
					break
				}
				var res *stun.Message
				select {
				case res = <-a.responses:
				case <-time.After(5 * time.Second):
				}
				if res == nil || errorCode(res) != int(stun.CodeStaleNonce) {
					break
				}
				var nonce stun.Nonce
				if nonce.GetFrom(res) == nil {
					a.c.nonce = nonce
				}
			}
		}
	}
}

// sendAtRate sends rate ChannelData frames a second, spread over the
// allocations, until end; at half it calls halfway once. It returns how
// many it sent.
func sendAtRate(as []*soakAlloc, rate int, end time.Time, halfway func(), half time.Time) int64 {
	const senders, tick = 4, 10 * time.Millisecond
	var sent atomic.Int64
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frame := make([]byte, 4+100)
			binary.BigEndian.PutUint16(frame, soakChannel)
			binary.BigEndian.PutUint16(frame[2:], 100)
			perTick := float64(rate) / senders * tick.Seconds()
			next, owed, i := time.Now(), 0.0, s
			for time.Now().Before(end) {
				owed += perTick
				for ; owed >= 1; owed-- {
					a := as[i]
					i += senders
					if i >= len(as) {
						i = s
					}
					binary.BigEndian.PutUint64(frame[4:], uint64(sent.Add(1)))
					_ = a.c.write(frame)
				}
				next = next.Add(tick)
				time.Sleep(time.Until(next))
			}
		}()
	}
	time.Sleep(time.Until(half))
	halfway()
	wg.Wait()
	return sent.Load()
}

// flood runs, from the peer address (not the legitimate clients'), until
// stop: malformed datagrams, wrong-password Allocates, and half-open TCP
// connections (4 bytes of a header, then nothing). It closes the returned
// channel when it has stopped.
func flood(t *testing.T, l *lab, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	turnAddr := net.JoinHostPort(nodeAddr, strconv.Itoa(turnPort))
	var udp net.Conn
	var wrong *client
	err := l.pub.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(peerAddr)}}
		udp, err = d.Dial("udp4", turnAddr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	wrong = l.dialFrom("udp", false, peerAddr)
	wrong.integrity = stun.NewLongTermIntegrity(labUser, labRealm, "wrong")
	_, _ = wrong.request(allocateType, udpTransport) // the nonce

	var wg sync.WaitGroup
	every := func(interval time.Duration, fn func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
					fn(i)
				}
			}
		}()
	}
	garbage := make([]byte, 200)
	malformed := [][]byte{
		stunHeader(0xFFEC),          // a length that wraps
		stunHeader(0x0003),          // not a multiple of 4
		{0xC0, 0x09, 0, 0, 0, 0, 0}, // top bits set
		{0x40, 0x00, 0x00, 0x10, 1}, // ChannelData shorter than it says
		garbage,
	}
	every(time.Millisecond, func(i int) { // ~1,000 malformed datagrams/s
		if i%len(malformed) == len(malformed)-1 {
			_, _ = rand.Read(garbage)
		}
		_, _ = udp.Write(malformed[i%len(malformed)])
	})
	every(time.Millisecond, func(int) { // ~1,000 wrong-password Allocates/s
		_ = wrong.write(wrong.build(allocateType, udpTransport).Raw)
	})
	var halfOpen atomic.Int32
	every(10*time.Millisecond, func(int) { // ~100 half-open connections/s, at most 200 open
		if halfOpen.Load() >= 200 {
			return
		}
		var c net.Conn
		err := l.pub.Do(func() (err error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(peerAddr)}, Timeout: time.Second}
			c, err = d.Dial("tcp4", turnAddr)
			return err
		})
		if err != nil {
			return
		}
		halfOpen.Add(1)
		_, _ = c.Write(stunHeader(0x0100)[:4])
		go func() {
			defer halfOpen.Add(-1)
			closedByRelay(c, 30*time.Second)
			_ = c.Close()
		}()
	})
	go func() {
		wg.Wait()
		_ = udp.Close()
		_ = wrong.conn.Close()
		close(done)
	}()
	return done
}
