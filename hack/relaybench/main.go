// Command relaybench measures how fast a TURN relay forwards ChannelData:
// turnpike's relay and coturn's turnserver, in the same run, from the same
// load generator, to the same UDP peer.
//
// For each relay and payload size it opens a few allocations, binds a
// channel on each to a UDP sink, sends ChannelData as fast as it can for a
// fixed time, and reports what reached the sink (packets/s) and the relay
// process's CPU time per delivered packet (utime+stime from /proc/PID/stat).
// Several runs alternate between the relays; medians are printed.
//
// The peer sink binds a non-loopback address of this machine: turnpike
// hard-denies loopback peers and has no switch to allow them, so the bench
// config allow-lists that address instead (coturn reaches it by default).
// Both relays relay to the same address, so neither gets an advantage.
//
// Usage: relaybench -turnpike ./bin/turnpike [-turnserver turnserver] [-duration 5s] [-runs 3]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/net/ipv4"
)

const (
	realm    = "bench.turnpike"
	user     = "bench"
	password = "bench-password"
	channel  = 0x4000
)

type options struct {
	turnpike, turnserver string
	duration             time.Duration
	runs, clients        int
	sizes                []int
	peerIP               netip.Addr
}

func main() {
	var o options
	var sizes, peer string
	flag.StringVar(&o.turnpike, "turnpike", "bin/turnpike", "turnpike binary")
	flag.StringVar(&o.turnserver, "turnserver", "turnserver", "coturn turnserver binary (empty: skip coturn)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "sending time per measurement")
	flag.IntVar(&o.runs, "runs", 3, "runs per relay and size (medians are reported)")
	flag.IntVar(&o.clients, "clients", 4, "allocations sending in parallel")
	flag.StringVar(&sizes, "sizes", "100,1200", "payload sizes in bytes")
	flag.StringVar(&peer, "peer", "", "peer address (default: first non-loopback IPv4 of this machine)")
	flag.Parse()
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			log.Fatalf("-sizes: %v", err)
		}
		o.sizes = append(o.sizes, n)
	}
	var err error
	if o.peerIP, err = pickPeer(peer); err != nil {
		log.Fatal(err)
	}
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

// relayProc is a relay under test.
type relayProc struct {
	name string
	addr string // TURN UDP address
	cmd  *exec.Cmd
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "relaybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var relays []*relayProc
	ours, err := startTurnpike(o, dir)
	if err != nil {
		return err
	}
	defer stop(ours)
	relays = append(relays, ours)
	if o.turnserver != "" {
		coturn, err := startCoturn(o, dir)
		if err != nil {
			return err
		}
		defer stop(coturn)
		relays = append(relays, coturn)
	}

	sink, err := newSink(o.peerIP)
	if err != nil {
		return err
	}
	defer sink.conn.Close()

	fmt.Printf("relaybench: %d CPUs, %s, peer %s, %d allocations, %s per run, %d runs\n",
		runtime.NumCPU(), runtime.Version(), sink.addr, o.clients, o.duration, o.runs)
	results := map[string][]measurement{}
	for _, size := range o.sizes {
		for run := 0; run < o.runs; run++ {
			for _, r := range relays {
				m, err := measure(o, r, sink, size)
				if err != nil {
					return fmt.Errorf("%s, %d bytes: %w", r.name, size, err)
				}
				key := fmt.Sprintf("%s/%d", r.name, size)
				results[key] = append(results[key], m)
				fmt.Printf("  run %d %-9s %5d B: %9.0f pkt/s delivered (%5.1f%% of sent), %6.2f µs CPU/pkt\n",
					run+1, r.name, size, m.pps, 100*m.delivered, m.cpuPerPacket.Seconds()*1e6)
			}
		}
	}
	fmt.Printf("\nmedians:\n%-9s %6s %12s %14s %16s %16s\n", "relay", "bytes", "pkt/s", "µs CPU/pkt", "pkt/s vs coturn", "CPU/pkt vs coturn")
	for _, size := range o.sizes {
		base := median(results[fmt.Sprintf("coturn/%d", size)])
		for _, r := range relays {
			m := median(results[fmt.Sprintf("%s/%d", r.name, size)])
			ratePPS, ratioCPU := "-", "-"
			if base.pps > 0 {
				ratePPS = fmt.Sprintf("%.2f", m.pps/base.pps)
				ratioCPU = fmt.Sprintf("%.2f", float64(m.cpuPerPacket)/float64(base.cpuPerPacket))
			}
			fmt.Printf("%-9s %6d %12.0f %14.2f %16s %16s\n", r.name, size, m.pps, m.cpuPerPacket.Seconds()*1e6, ratePPS, ratioCPU)
		}
	}
	return nil
}

type measurement struct {
	pps          float64
	delivered    float64 // fraction of sent packets that reached the sink
	cpuPerPacket time.Duration
}

func median(ms []measurement) measurement {
	if len(ms) == 0 {
		return measurement{}
	}
	pps := make([]float64, len(ms))
	cpu := make([]time.Duration, len(ms))
	for i, m := range ms {
		pps[i], cpu[i] = m.pps, m.cpuPerPacket
	}
	slices.Sort(pps)
	slices.Sort(cpu)
	return measurement{pps: pps[len(pps)/2], cpuPerPacket: cpu[len(cpu)/2]}
}

// measure opens the allocations, sends for o.duration and reads the sink
// and the relay's CPU time.
func measure(o options, r *relayProc, sink *sink, size int) (measurement, error) {
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range o.clients {
		c, err := openChannel(r.addr, sink.addr)
		if err != nil {
			return measurement{}, err
		}
		conns = append(conns, c)
	}
	time.Sleep(100 * time.Millisecond) // let set-up traffic settle before counting
	sink.received.Store(0)
	cpuBefore, err := cpuTime(r.cmd.Process.Pid)
	if err != nil {
		return measurement{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent.Add(blast(ctx, c, size))
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // packets still in the relay's queues
	cpuAfter, err := cpuTime(r.cmd.Process.Pid)
	if err != nil {
		return measurement{}, err
	}
	got := sink.received.Load()
	if got == 0 {
		return measurement{}, errors.New("no packet reached the peer")
	}
	return measurement{
		pps:          float64(got) / o.duration.Seconds(),
		delivered:    float64(got) / float64(max(sent.Load(), 1)),
		cpuPerPacket: (cpuAfter - cpuBefore) / time.Duration(got),
	}, nil
}

// blast sends ChannelData frames of size bytes in batches (sendmmsg) until
// ctx ends, and returns how many it sent.
func blast(ctx context.Context, c *net.UDPConn, size int) int64 {
	frame := make([]byte, 4+size)
	frame[0], frame[1] = channel>>8, channel&0xff
	frame[2], frame[3] = byte(size>>8), byte(size)
	pc := ipv4.NewPacketConn(c)
	batch := make([]ipv4.Message, 32)
	for i := range batch {
		batch[i].Buffers = [][]byte{frame}
	}
	var sent int64
	for ctx.Err() == nil {
		n, err := pc.WriteBatch(batch, 0)
		if err != nil {
			continue // ENOBUFS and friends: the kernel is full, try again
		}
		sent += int64(n)
	}
	return sent
}

// sink counts datagrams arriving at the peer address.
type sink struct {
	conn     *net.UDPConn
	addr     netip.AddrPort
	received atomic.Int64
}

func newSink(ip netip.Addr) (*sink, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(8 << 20)
	s := &sink{conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	go func() {
		pc := ipv4.NewPacketConn(c)
		batch := make([]ipv4.Message, 64)
		for i := range batch {
			batch[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			n, err := pc.ReadBatch(batch, 0)
			if err != nil {
				return
			}
			s.received.Add(int64(n))
		}
	}()
	return s, nil
}

// cpuTime is utime+stime of a process (all its threads).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" closing the command name; utime and stime are
	// fields 14 and 15 of the whole line, 12 and 13 after the name.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

func pickPeer(flagValue string) (netip.Addr, error) {
	if flagValue != "" {
		return netip.ParseAddr(flagValue)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, errors.New("no non-loopback IPv4 address for the peer; pass -peer")
}

func freePort() (int, error) {
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.LocalAddr().(*net.UDPAddr).Port, nil
}

func startTurnpike(o options, dir string) (*relayProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	internal, err := freePort()
	if err != nil {
		return nil, err
	}
	key := stun.NewLongTermIntegrity(user, realm, password)
	relayYAML := fmt.Sprintf(`version: turnpike.dev/relay/v1
realm: %s
listeners: [{name: udp, protocol: UDP, port: %d}]
relayPortRange: {min: 20000, max: 29999}
addresses: {bind: ["127.0.0.1"]}
peerPolicy: {allow: ["%s/32"]}
internal: {address: 127.0.0.1, metricsPort: %d, healthPort: %d}
drainGracePeriod: 1s
log: {level: warn, format: text}
`, realm, port, o.peerIP, internal, internal)
	credsYAML := fmt.Sprintf("version: turnpike.dev/relay/v1\ngeneration: 1\nusers: [{username: %s, key: %x}]\n", user, []byte(key))
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(relayYAML), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "credentials.yaml"), []byte(credsYAML), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(o.turnpike, "relay", "--config", filepath.Join(dir, "relay.yaml"), "--credentials", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relayProc{name: "turnpike", addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	return r, waitUntilServing(r)
}

func startCoturn(o options, dir string) (*relayProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.turnserver, "-n", "--no-cli", "--no-tcp", "--no-tls", "--no-dtls", "--no-tcp-relay",
		"--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", strconv.Itoa(port),
		"--min-port", "30000", "--max-port", "39999", "--lt-cred-mech", "--realm", realm,
		"--user", user+":"+password, "--userdb", filepath.Join(dir, "turndb"),
		"--pidfile", filepath.Join(dir, "turnserver.pid"), "--log-file", "stdout", "--no-stdout-log", "--simple-log",
		"--no-rfc5780", "--no-stun-backward-compatibility")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relayProc{name: "coturn", addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	return r, waitUntilServing(r)
}

// waitUntilServing retries an allocation until the relay answers.
func waitUntilServing(r *relayProc) error {
	var err error
	for range 50 {
		var c *net.UDPConn
		if c, err = openChannel(r.addr, netip.AddrPort{}); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not start serving: %w", r.name, err)
}

func stop(r *relayProc) {
	_ = r.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
	}
}
