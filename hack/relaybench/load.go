package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/turnpike-dev/turnpike/hack/internal/proc"
)

// Every payload starts with a header the sink reads: the send time (ns
// since epoch, this process's monotonic clock) and the measurement's id, so
// stragglers of the previous measurement are not counted.
const payloadHeader = 16

var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

type measurement struct {
	pps          float64       // delivered packets/s
	loss         float64       // fraction of sent packets that did not arrive
	cpuPerPacket time.Duration // the relay process's CPU time per delivered packet
	switches     float64       // the relay's context switches per delivered packet
	sysUS        float64       // the whole machine's busy CPU µs per delivered packet
	p50, p99     time.Duration

	// background is the fraction of the machine's CPUs busy just before
	// the run, while the bench sent nothing (other work on the machine).
	background float64

	// The fast path (turnpike-ebpf only): whether its program was attached
	// throughout the run, and the packets it relayed client → peer as a
	// fraction of those delivered.
	fastPath      fastPathState
	fastPathShare float64
	// kernelUS is the fast path program's own run time per delivered packet
	// (the kernel's BPF statistics; turnpike-ebpf only, hasKernel), and
	// kernelRelayedUS the same per packet the program relayed client →
	// peer: what a packet costs in the kernel, whether or not the sink's
	// socket then had room for it.
	kernelUS        float64
	kernelRelayedUS float64
	hasKernel       bool
}

type fastPathState int

const (
	fastPathNone     fastPathState = iota // not a fast-path relay
	fastPathActive                        // attached before and after the run
	fastPathInactive                      // not attached (or its metrics unreadable)
)

// measure sends ChannelData of size bytes over all clients at the offered
// rate (0: as fast as possible) for o.duration, and reads the sink, the
// relay's CPU time and the machine's. For the direct baseline the clients
// send the same payloads (without the ChannelData header) straight to the
// sink instead.
func measure(o options, r *relayProc, clients []*client, sink *sink, size int, offered float64) (measurement, error) {
	var m measurement
	id := sink.start()
	m.background = backgroundLoad(100 * time.Millisecond)
	var fpBefore float64
	if r.fastPath {
		active, n, err := fastPathStatus(r)
		m.fastPath, fpBefore = fastPathInactive, n
		if err == nil && active {
			m.fastPath = fastPathActive
		}
	}
	var cpuBefore time.Duration
	var switchesBefore int64
	if r.direct {
		if err := connectAll(clients, func(*client) netip.AddrPort { return sink.addr }); err != nil {
			return m, err
		}
	} else {
		var err error
		if cpuBefore, err = proc.CPUTime(r.cmd.Process.Pid); err != nil {
			return m, err
		}
		switchesBefore = contextSwitches(r.cmd.Process.Pid)
	}
	var bpfBefore time.Duration
	var bpfErr error
	if r.fastPath {
		bpfBefore, _, bpfErr = bpfRunTime()
	}
	busyBefore, err := systemBusy()
	if err != nil {
		return m, err
	}
	dst := clients[0].RemoteAddr().(*net.UDPAddr).AddrPort() // the relay's listener
	if r.direct {
		dst = sink.addr
	}
	sent, err := sendAll(clients, size, offered, o.duration, id, r.direct, o.rawSend, dst)
	if err != nil {
		return m, err
	}
	time.Sleep(200 * time.Millisecond) // packets still in the relay's queues
	busyAfter, err := systemBusy()
	if err != nil {
		return m, err
	}
	if r.direct {
		if err := connectAll(clients, func(c *client) netip.AddrPort { return c.RemoteAddr().(*net.UDPAddr).AddrPort() }); err != nil {
			return m, err
		}
	}
	var cpu time.Duration
	if !r.direct {
		cpuAfter, err := proc.CPUTime(r.cmd.Process.Pid)
		if err != nil {
			return m, err
		}
		cpu = cpuAfter - cpuBefore
		m.switches = float64(contextSwitches(r.cmd.Process.Pid) - switchesBefore)
	}
	got, p50, p99 := sink.stop()
	if got == 0 {
		return m, errors.New("no packet reached the peer")
	}
	if r.fastPath {
		active, n, err := fastPathSettled(r)
		if err != nil || !active {
			m.fastPath = fastPathInactive
		}
		relayed := n - fpBefore
		m.fastPathShare = relayed / float64(got)
		if bpfAfter, _, err := bpfRunTime(); bpfErr == nil && err == nil && bpfAfter > bpfBefore && relayed > 0 {
			us := float64(bpfAfter-bpfBefore) / float64(time.Microsecond)
			m.kernelUS, m.kernelRelayedUS = us/float64(got), us/relayed
			m.hasKernel = true
		}
	}
	m.pps = float64(got) / o.duration.Seconds()
	m.loss = max(0, 1-float64(got)/float64(max(sent, 1)))
	m.cpuPerPacket = cpu / time.Duration(got)
	m.switches /= float64(got)
	m.sysUS = float64(busyAfter-busyBefore) / float64(time.Microsecond) / float64(got)
	m.p50, m.p99 = p50, p99
	return m, nil
}

// senders is how many goroutines generate load. Two keep up with either
// relay on two cores without starving it more than necessary.
const senders = 2

// connectAll connects each client's socket to an address: the sink for a
// direct run, and back to the relay after it (the socket keeps its local
// address and port, so the relay's allocation still matches). A connected
// socket, rather than sendmmsg with a destination, keeps the cached route
// of the relay runs; a route lookup per datagram would make direct dearer.
func connectAll(clients []*client, to func(*client) netip.AddrPort) error {
	for _, c := range clients {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		a := to(c)
		var sa syscall.Sockaddr = &syscall.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
		if a.Addr().Is4() {
			sa = &syscall.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
		}
		var cerr error
		if err := rc.Control(func(fd uintptr) { cerr = syscall.Connect(int(fd), sa) }); err != nil {
			return err
		}
		if cerr != nil {
			return fmt.Errorf("connect to %s: %w", a, cerr)
		}
	}
	return nil
}

// sendAll splits the clients and the rate over the senders and returns how
// many packets they sent: ChannelData to the relay, or with direct, the
// bare payload (the clients' sockets are then connected to the sink).
func sendAll(clients []*client, size int, offered float64, d time.Duration, id uint32, direct bool, raw bool, dst netip.AddrPort) (int64, error) {
	n := min(senders, len(clients))
	var total atomic.Int64
	var wg sync.WaitGroup
	shares := make([][]*client, n)
	for j, c := range clients {
		shares[j%n] = append(shares[j%n], c)
	}
	rawSenders := make([]*rawSender, n)
	if raw {
		for i := range rawSenders {
			s, err := newRawSender(shares[i], dst)
			if err != nil {
				return 0, err
			}
			defer s.Close()
			rawSenders[i] = s
		}
	}
	deadline := time.Now().Add(d)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			total.Add(send(shares[i], rawSenders[i], size, offered/float64(n), deadline, id, direct))
		}()
	}
	wg.Wait()
	return total.Load(), nil
}

// maxBurst is the most packets one sendmmsg sends on one socket.
const maxBurst = 32

// send writes ChannelData round-robin over clients, a burst per client,
// paced to rate packets/s (0: unpaced) until deadline. The send time in
// each payload is the time of its system call. With direct, it sends the
// payload alone, without the ChannelData header. With raw, one system call
// carries up to maxBurst datagrams, the bursts of successive clients;
// without, one client's burst through its own socket.
func send(clients []*client, raw *rawSender, size int, rate float64, deadline time.Time, id uint32, direct bool) int64 {
	hdr := 4 // ChannelData: channel number, length
	if direct {
		hdr = 0
	}
	frame := make([]byte, hdr+size)
	if hdr > 0 {
		frame[0], frame[1] = channel>>8, channel&0xff
		binary.BigEndian.PutUint16(frame[2:], uint16(size))
	}
	binary.BigEndian.PutUint32(frame[hdr+8:], id)
	conns := make([]*ipv4.PacketConn, len(clients))
	for i, c := range clients {
		conns[i] = ipv4.NewPacketConn(c.UDPConn)
	}
	batch := make([]ipv4.Message, maxBurst)
	for i := range batch {
		batch[i].Buffers = [][]byte{frame}
	}
	// With many allocations, a burst per client would make traffic far
	// burstier than real media; send fewer per client then.
	burst := max(1, min(maxBurst, 256/len(clients)))
	perCall := burst
	if raw != nil {
		perCall = maxBurst
	}
	start := time.Now()
	var sent int64
	turn := roundRobin{clients: len(clients), burst: burst}
	var senders []int
	for time.Now().Before(deadline) {
		k := perCall
		if rate > 0 {
			due := int64(rate*time.Since(start).Seconds()) - sent
			if due <= 0 {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			k = int(min(due, int64(perCall)))
		}
		binary.BigEndian.PutUint64(frame[hdr:], uint64(now()))
		var n int
		var err error
		if raw == nil {
			k = min(k, turn.leftInBurst())
			n, err = conns[turn.next].WriteBatch(batch[:k], 0)
			turn.take(k, senders)
		} else {
			senders = turn.take(k, senders)
			for j, c := range senders {
				raw.message(&batch[j], clients[c], frame)
			}
			n, err = raw.conn.WriteBatch(batch[:k], 0)
		}
		// The turn moves past any datagrams the kernel did not take too;
		// they are not counted as sent.
		if err != nil {
			continue // ENOBUFS and friends: the kernel is full, go on
		}
		sent += int64(n)
	}
	return sent
}

// roundRobin says which client sends each datagram: the clients in turn,
// burst datagrams each.
type roundRobin struct {
	clients, burst int
	next, inBurst  int // the client whose datagram is next, and how many of its burst went
}

// take appends to into the client of each of the next k datagrams, and
// moves past them.
func (r *roundRobin) take(k int, into []int) []int {
	into = into[:0]
	for range k {
		into = append(into, r.next)
		if r.inBurst++; r.inBurst == r.burst {
			r.next, r.inBurst = (r.next+1)%r.clients, 0
		}
	}
	return into
}

// leftInBurst is how many datagrams of its burst the next client has left.
func (r *roundRobin) leftInBurst() int { return r.burst - r.inBurst }

// sink counts datagrams of the current measurement arriving at the peer
// address and records their latency.
type sink struct {
	conn *net.UDPConn
	addr netip.AddrPort

	mu       sync.Mutex
	id       uint32
	received int64
	hist     latencyHistogram
}

func newSink(ip netip.Addr) (*sink, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(16 << 20)
	s := &sink{conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), hist: make(latencyHistogram, histBuckets)}
	go s.loop()
	return s, nil
}

func (s *sink) loop() {
	pc := ipv4.NewPacketConn(s.conn)
	batch := make([]ipv4.Message, 64)
	for i := range batch {
		batch[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		n, err := pc.ReadBatch(batch, 0)
		if err != nil {
			return
		}
		t := now()
		s.mu.Lock()
		for _, m := range batch[:n] {
			b := m.Buffers[0][:m.N]
			if m.N < payloadHeader || binary.BigEndian.Uint32(b[8:]) != s.id {
				continue
			}
			s.received++
			s.hist.add(time.Duration(t - int64(binary.BigEndian.Uint64(b))))
		}
		s.mu.Unlock()
	}
}

// start begins a new measurement and returns its id.
func (s *sink) start() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id++
	s.received = 0
	clear(s.hist)
	return s.id
}

// stop returns what arrived since start, and its latency percentiles.
func (s *sink) stop() (received int64, p50, p99 time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	received = s.received
	s.id++ // late arrivals no longer count
	return received, s.hist.percentile(0.50), s.hist.percentile(0.99)
}

// latencyHistogram has 10 µs buckets up to 1 s; slower goes in the last.
type latencyHistogram []int64

const (
	histBucket  = 10 * time.Microsecond
	histBuckets = 100_000
)

func (h latencyHistogram) add(d time.Duration) {
	h[min(max(int(d/histBucket), 0), histBuckets-1)]++
}

func (h latencyHistogram) percentile(p float64) time.Duration {
	var total int64
	for _, n := range h {
		total += n
	}
	want := int64(p * float64(total))
	var seen int64
	for i, n := range h {
		seen += n
		if seen > want {
			return time.Duration(i)*histBucket + histBucket/2
		}
	}
	return 0
}

func median(ms []measurement) measurement {
	pick := func(f func(measurement) float64) float64 {
		v := make([]float64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	fp := fastPathNone
	hasKernel := true
	for _, m := range ms {
		if m.fastPath > fp {
			fp = m.fastPath // one run without the program marks the cell
		}
		hasKernel = hasKernel && m.hasKernel
	}
	return measurement{
		pps:             pick(func(m measurement) float64 { return m.pps }),
		loss:            pick(func(m measurement) float64 { return m.loss }),
		cpuPerPacket:    time.Duration(pick(func(m measurement) float64 { return float64(m.cpuPerPacket) })),
		switches:        pick(func(m measurement) float64 { return m.switches }),
		sysUS:           pick(func(m measurement) float64 { return m.sysUS }),
		p50:             time.Duration(pick(func(m measurement) float64 { return float64(m.p50) })),
		p99:             time.Duration(pick(func(m measurement) float64 { return float64(m.p99) })),
		background:      pick(func(m measurement) float64 { return m.background }),
		fastPath:        fp,
		fastPathShare:   pick(func(m measurement) float64 { return m.fastPathShare }),
		kernelUS:        pick(func(m measurement) float64 { return m.kernelUS }),
		kernelRelayedUS: pick(func(m measurement) float64 { return m.kernelRelayedUS }),
		hasKernel:       hasKernel,
	}
}
