// Command relaybench measures how fast and how cheaply a TURN relay forwards
// ChannelData: turnpike's relay and coturn's turnserver, in the same run,
// from the same load generator, to the same UDP peer.
//
// For each number of allocations (-allocs) it opens that many allocations on
// each relay (timing the set-up: allocations/s, and reading the relay's RSS
// before and after: bytes per idle allocation), binds a channel on each to a
// UDP sink, and then, for each payload size and offered rate, sends
// ChannelData for -duration and reports what reached the sink:
//
//   - delivered packets/s and loss (the fraction of sent packets that never
//     arrived);
//   - the relay process's CPU time per delivered packet (utime+stime of all
//     its threads from /proc/PID/stat);
//   - the whole machine's CPU time per delivered packet (user + nice +
//     system + irq + softirq from /proc/stat), and that minus the same for
//     a "direct" run, in which the same client sockets send the same
//     payloads at the same pacing straight to the sink: what the relay
//     adds, wherever it does its work (the eBPF fast path does it in the
//     sender's softirq context, not in the relay process);
//   - p50/p99 latency from the load generator to the sink through the relay
//     (each packet carries its send time; the sink reads the clock when its
//     batch arrives).
//
// Rates: a number is packets/s offered in total (paced), "max" sends as fast
// as the generator can, and "2x" offers twice what that relay delivered at
// "max" in the same cell (the overload test: does goodput hold or collapse?).
// Runs alternate between the relays; medians are printed, with turnpike's
// ratios to coturn, and at the end a summary against the project's goals.
//
// Running as root, it also measures "turnpike-ebpf": the same binary run as
// a relay pod runs it by default, the relay as an unprivileged user with
// the fast path Auto and the fast-path agent (`turnpike fastpath`, root)
// holding the program on lo, checking on the relay's /metrics that the
// fast path is active and counting the packets the kernel relayed. Its
// cost is the program's run time (the kernel's BPF statistics): per
// delivered packet in the comparison with coturn, and per packet the
// program relayed in the goal line on kernel µs per packet (the sink's
// socket may drop what the program relayed; that is not the program's
// cost).
//
// The peer sink binds a non-loopback address of this machine: turnpike
// hard-denies loopback peers and has no switch to allow them, so the bench
// config allow-lists that address instead (coturn reaches it by default).
//
// Usage: relaybench -turnpike ./bin/turnpike [-turnserver turnserver] [-duration 2s] [-runs 3]
//
//	[-allocs 1,100,10000] [-sizes 100,1200] [-rates 100000,200000,max,2x] [-relay-cpus 0] [-ebpf=false] [-userspace=false]
package main

import (
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
	"syscall"
	"time"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/hack/internal/proc"
	"github.com/turnpike-dev/turnpike/test/benchlock"
)

const (
	realm    = "bench.turnpike"
	user     = "bench"
	password = "bench-password"
	channel  = 0x4000
)

type options struct {
	turnpike, turnserver string
	baseline             string
	duration             time.Duration
	runs                 int
	allocs, sizes        []int
	rates                []string
	relayCPUs            string
	ebpf                 bool
	userspace            bool
	setupWorkers         int
	rawSend              bool // clients' datagrams through a raw socket, many clients per system call
	peerIP               netip.Addr
	loopback             netip.Addr // the relays' listener and relay address: 127.0.0.1 or ::1
	clientIP             netip.Addr // the load generator's client sockets
}

func main() {
	var o options
	var allocs, sizes, rates, peer string
	var family int
	flag.StringVar(&o.turnpike, "turnpike", "bin/turnpike", "turnpike binary")
	flag.StringVar(&o.baseline, "baseline", "", "an older turnpike binary to measure too, as \"before\" (optional)")
	flag.StringVar(&o.turnserver, "turnserver", "turnserver", "coturn turnserver binary (empty: skip coturn)")
	flag.DurationVar(&o.duration, "duration", 2*time.Second, "sending time per measurement")
	flag.IntVar(&o.runs, "runs", 3, "runs per cell and relay (medians are reported)")
	flag.StringVar(&allocs, "allocs", "1,100,10000", "allocation counts (each sends; the rate is shared)")
	flag.StringVar(&sizes, "sizes", "100,1200", "payload sizes in bytes (at least 16)")
	flag.StringVar(&rates, "rates", "100000,200000,max,2x", "offered rates: packets/s, max, or 2x (twice the relay's max)")
	flag.StringVar(&o.relayCPUs, "relay-cpus", "", "pin the relays to these CPUs with taskset (e.g. 0)")
	flag.BoolVar(&o.userspace, "userspace", true, "measure turnpike relaying in userspace (\"turnpike\"); false with -ebpf measures the fast path alone, to compare builds of it in a shorter run")
	flag.BoolVar(&o.ebpf, "ebpf", true, "also measure turnpike in its default configuration, fast path through the agent on lo (\"turnpike-ebpf\"; needs root)")
	flag.IntVar(&o.setupWorkers, "setup-workers", 32, "allocations set up in parallel")
	flag.BoolVar(&o.rawSend, "raw-send", true, "send the clients' datagrams through one raw socket per sender, up to 32 of several clients per system call, as a NIC hands the kernel a batch (needs root); false: through each client's socket, one client's burst per call")
	flag.StringVar(&peer, "peer", "", "peer address (default: first non-loopback address of -family of this machine)")
	flag.IntVar(&family, "family", 4, "IP version of every address in the test, 4 or 6: relays on 127.0.0.1 or ::1")
	flag.Parse()
	o.allocs = mustInts("-allocs", allocs)
	o.sizes = mustInts("-sizes", sizes)
	o.rates = strings.Split(rates, ",")
	for _, s := range o.sizes {
		if s < payloadHeader {
			log.Fatalf("-sizes: %d is below %d bytes", s, payloadHeader)
		}
	}
	var err error
	if o.peerIP, err = pickPeer(peer, family); err != nil {
		log.Fatal(err)
	}
	o.loopback, o.clientIP = loopbackAddrs(o.peerIP)
	raiseFileLimit()
	release, err := benchlock.Hold(os.Stdout, "relaybench")
	if err != nil {
		log.Fatal(err)
	}
	defer release()
	if err := run(o); err != nil {
		log.Fatal(err) // (the kernel drops the lock at exit)
	}
}

func mustInts(name, list string) []int {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		out = append(out, n)
	}
	return out
}

// raiseFileLimit lifts RLIMIT_NOFILE: 10,000 allocations are 10,000 sockets
// here and in each relay (the relays inherit the limit). Root may raise the
// hard limit too; otherwise the soft limit goes up to the hard one.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	want := syscall.Rlimit{Cur: 1 << 17, Max: max(lim.Max, 1<<17)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// relayProc is a relay under test, or the direct baseline.
type relayProc struct {
	name   string
	addr   string     // TURN UDP address
	client netip.Addr // the address its clients send from
	cmd    *exec.Cmd  // nil for direct

	metrics  string    // turnpike: its /metrics URL
	log      *relayLog // turnpike: its log
	fastPath bool      // turnpike started with the eBPF fast path on (Auto, through the agent)
	agent    *exec.Cmd // turnpike-ebpf: the fast-path agent, `turnpike fastpath`
	direct   bool      // not a relay: the clients send straight to the sink
}

// Relay names the report knows.
const (
	turnpikeName = "turnpike"
	ebpfName     = "turnpike-ebpf"
	coturnName   = "coturn"
	directName   = "direct"
)

func run(o options) error {
	dir, err := os.MkdirTemp("", "relaybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var relays []*relayProc
	if o.userspace {
		ours, err := startTurnpike(o, turnpikeName, o.turnpike, dir, false)
		if err != nil {
			return err
		}
		defer stop(ours)
		relays = append(relays, ours)
	}
	if o.baseline != "" {
		baseDir := filepath.Join(dir, "before")
		if err := os.Mkdir(baseDir, 0o700); err != nil {
			return err
		}
		before, err := startTurnpike(o, "before", o.baseline, baseDir, false)
		if err != nil {
			return err
		}
		defer stop(before)
		relays = append(relays, before)
	}
	switch {
	case o.rawSend && os.Geteuid() != 0:
		o.rawSend = false
		fmt.Println("load: through each client's own socket, one client's burst per system call (-raw-send needs root)")
	case o.rawSend:
		fmt.Printf("load: the clients' datagrams through one raw socket per sender (%d senders), up to %d datagrams of successive clients per system call; -raw-send=false: each client's own socket\n", senders, maxBurst)
	default:
		fmt.Println("load: through each client's own socket, one client's burst per system call")
	}
	var statsOwn time.Duration // the BPF statistics' own cost per run; 0: not measured
	switch {
	case !o.ebpf:
	case os.Geteuid() != 0:
		fmt.Printf("%s: skipped: not running as root (its fast-path agent needs CAP_BPF and CAP_NET_ADMIN, and the relay is started as another user)\n", ebpfName)
	default:
		ebpfDir := filepath.Join(dir, "ebpf")
		if err := os.Mkdir(ebpfDir, 0o700); err != nil {
			return err
		}
		fast, err := startTurnpike(o, ebpfName, o.turnpike, ebpfDir, true)
		if err != nil {
			return err
		}
		defer stop(fast)
		relays = append(relays, fast)
		if restore, err := enableBPFStats(); err != nil {
			fmt.Printf("%s: kernel BPF statistics unavailable (%v): its relay µs/pkt falls back to sys minus direct\n", ebpfName, err)
		} else {
			defer restore()
			if statsOwn, err = statsCost(); err != nil {
				fmt.Printf("%s: the BPF statistics' own cost per run not measured: %v\n", ebpfName, err)
			} else {
				fmt.Printf("%s: the BPF statistics' own cost, in every kernel µs figure below: %.3f µs per program run (a program of two instructions on lo in a namespace of its own, median of 5 rounds)\n", ebpfName, statsOwn.Seconds()*1e6)
			}
		}
		fmt.Printf("%s: the relay runs as a relay pod's does (%s; fast path Auto, through the agent), the agent `turnpike fastpath` as root with BPF, NET_ADMIN and PERFMON (%s)\n",
			ebpfName, privileges(fast.cmd.Process.Pid), privileges(fast.agent.Process.Pid))
		if checkFastPath(fast) {
			fmt.Printf("%s: its TC program sees every packet on lo, the other relays' and the direct runs' too (a map lookup each, then passed on)\n", ebpfName)
		}
		if o.relayCPUs != "" {
			fmt.Printf("%s: taskset pins its process only; the fast path relays in softirq context on the sending CPU (the load generator's, not pinned)\n", ebpfName)
		}
	}
	if o.turnserver != "" {
		coturn, err := startCoturn(o, dir)
		if err != nil {
			return err
		}
		defer stop(coturn)
		relays = append(relays, coturn)
	}

	if len(relays) == 0 {
		return fmt.Errorf("nothing to measure: -userspace=false, and neither the fast path (-ebpf, as root) nor coturn (-turnserver)")
	}
	sink, err := newSink(o.peerIP)
	if err != nil {
		return err
	}
	defer sink.conn.Close()

	pinned := "not pinned"
	if o.relayCPUs != "" {
		pinned = "pinned to CPU " + o.relayCPUs
	}
	fmt.Printf("relaybench: %d CPUs, %s, peer %s, relays %s, %s per run, %d runs\n",
		runtime.NumCPU(), runtime.Version(), sink.addr, pinned, o.duration, o.runs)
	rep := newReport()
	rep.statsOwn = statsOwn
	for _, n := range o.allocs {
		if err := runAllocs(o, relays, sink, n, rep); err != nil {
			return err
		}
	}
	rep.print(o, relays)
	rep.printGoals(o)
	return nil
}

// runAllocs measures n allocations on every relay. Runs alternate between
// the relays, so both see the same machine; when the file limit cannot
// hold the client sockets of all relays at once (10,000 allocations
// without CAP_SYS_RESOURCE), the relays take turns instead.
// The direct baseline runs along with the first group only.
func runAllocs(o options, relays []*relayProc, sink *sink, n int, rep *report) error {
	if len(relays)*n+256 <= fileLimit() {
		return runGroup(o, relays, sink, n, rep, true)
	}
	fmt.Printf("  %d allocations: file limit %d holds one relay's clients at a time; relays measured one after the other (direct with the first)\n", n, fileLimit())
	for i, r := range relays {
		if err := runGroup(o, []*relayProc{r}, sink, n, rep, i == 0); err != nil {
			return err
		}
	}
	return nil
}

func fileLimit() int {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 1024
	}
	return int(lim.Cur)
}

// runGroup sets up n allocations on each relay, measures every size and
// rate on them, and releases them. With withDirect, each run also measures
// the direct baseline: the first relay's client sockets sending the same
// payloads straight to the sink.
func runGroup(o options, relays []*relayProc, sink *sink, n int, rep *report, withDirect bool) error {
	clients := map[string][]*client{}
	defer func() {
		for _, cs := range clients {
			for i, c := range cs {
				c.release()
				if i%256 == 255 {
					time.Sleep(5 * time.Millisecond) // do not flood the relay's socket buffer with Refreshes
				}
			}
		}
		time.Sleep(500 * time.Millisecond) // let the relays free them before the next count
	}()
	for _, r := range relays {
		s, cs, err := setUp(o, r, sink, n)
		clients[r.name] = cs
		if err != nil {
			return fmt.Errorf("%s, %d allocations: %w", r.name, n, err)
		}
		rep.setups[setupKey{r.name, n}] = s
		fmt.Printf("  %-13s %6d allocations: %7.0f allocations/s, %6.1f KB RSS per allocation\n",
			r.name, n, s.perSecond, s.rssPerAlloc/1024)
	}
	measured := relays
	if withDirect {
		measured = append(slices.Clone(relays), &relayProc{name: directName, direct: true})
	}
	clientsOf := func(r *relayProc) []*client {
		if r.direct {
			return clients[relays[0].name]
		}
		return clients[r.name]
	}
	for _, size := range o.sizes {
		for _, rate := range o.rates {
			for run := 1; run <= o.runs; run++ {
				for _, r := range measured {
					k := cellKey{r.name, n, size, rate}
					offered, err := offeredRate(rate, rep, k)
					if err != nil {
						return err
					}
					m, err := measure(o, r, clientsOf(r), sink, size, offered)
					if err != nil {
						return fmt.Errorf("%s, %d allocations, %d bytes, rate %s: %w", r.name, n, size, rate, err)
					}
					rep.cells[k] = append(rep.cells[k], m)
					rep.background = append(rep.background, m.background)
					fmt.Printf("  run %d %-13s %6d allocs %5d B %7s: %9.0f pkt/s (%5.1f%% loss), %s µs CPU/pkt (process), %6.2f µs/pkt (system), %s switches/pkt, latency p50 %s p99 %s%s, background %s\n",
						run, r.name, n, size, rate, m.pps, 100*m.loss, fmtProcess(r, m), m.sysUS, fmtSwitches(r, m),
						fmtLatency(m.p50), fmtLatency(m.p99), fmtFastPathRun(m), fmtPercent(m.background))
				}
			}
		}
	}
	return nil
}

// offeredRate turns a -rates entry into packets/s (0: as fast as possible).
func offeredRate(rate string, rep *report, k cellKey) (float64, error) {
	switch rate {
	case "max", "0":
		return 0, nil
	case "2x":
		k.rate = "max"
		ms, ok := rep.cells[k]
		if !ok {
			return 0, errors.New(`rate "2x" needs "max" before it in -rates`)
		}
		return 2 * median(ms).pps, nil
	}
	return strconv.ParseFloat(rate, 64)
}

// setupResult is how fast a relay sets up allocations and what they cost
// it in memory while idle.
type setupResult struct {
	perSecond   float64 // allocations (Allocate with credentials + ChannelBind) per second
	rssPerAlloc float64 // bytes of relay RSS per idle allocation
}

// setUp opens n allocations with o.setupWorkers in parallel and reads the
// relay's RSS before and after (after a pause, so the relay is idle).
func setUp(o options, r *relayProc, sink *sink, n int) (setupResult, []*client, error) {
	rssBefore, err := proc.RSS(r.cmd.Process.Pid)
	if err != nil {
		return setupResult{}, nil, err
	}
	clients := make([]*client, n)
	errs := make(chan error, o.setupWorkers)
	next := make(chan int)
	start := time.Now()
	var wg sync.WaitGroup
	for range min(o.setupWorkers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := openChannel(r.client, r.addr, sink.addr)
				if err != nil {
					errs <- err
					return
				}
				clients[i] = c
			}
		}()
	}
	var setupErr error
feed:
	for i := range n {
		select {
		case next <- i:
		case setupErr = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	var opened []*client
	for _, c := range clients {
		if c != nil {
			opened = append(opened, c)
		}
	}
	if setupErr != nil {
		return setupResult{}, opened, setupErr
	}
	time.Sleep(time.Second) // idle: let the relay settle
	rssAfter, err := proc.RSS(r.cmd.Process.Pid)
	if err != nil {
		return setupResult{}, opened, err
	}
	return setupResult{
		perSecond:   float64(n) / elapsed.Seconds(),
		rssPerAlloc: float64(rssAfter-rssBefore) / float64(n),
	}, opened, nil
}

// contextSwitches sums the voluntary and involuntary context switches of
// all threads of a process. Switches, not system calls, turned out to be
// what separates a Go relay from coturn on this kind of machine, so the
// bench reports them per packet.
func contextSwitches(pid int) int64 {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var total int64
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread just exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				total += n
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				total += n
			}
		}
	}
	return total
}

func pickPeer(flagValue string, family int) (netip.Addr, error) {
	if flagValue != "" {
		return netip.ParseAddr(flagValue)
	}
	if family != 4 && family != 6 {
		return netip.Addr{}, fmt.Errorf("-family %d: 4 or 6", family)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() == (family == 4) && p.Addr().IsGlobalUnicast() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no non-loopback IPv%d address for the peer; pass -peer", family)
}

// loopbackAddrs are the relays' address and the clients' for a peer's
// family. IPv4 clients use 127.0.0.2: a socket bound there never holds a
// port the relays want for a relay socket on 127.0.0.1, so 10,000 client
// sockets do not make the relays' port allocation fail. IPv6 has one
// loopback address, so its clients use the peer's address for that.
func loopbackAddrs(peer netip.Addr) (relays, clients netip.Addr) {
	if peer.Is4() {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.AddrFrom4([4]byte{127, 0, 0, 2})
	}
	return netip.IPv6Loopback(), peer
}

func freePort() (int, error) {
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.LocalAddr().(*net.UDPAddr).Port, nil
}

// command runs a relay, under taskset when -relay-cpus is set. The relay
// gets SIGTERM if relaybench dies without stopping it (killed, or SIGPIPE
// from `| head`): a relay left running would skew the next bench, and
// turnpike-ebpf's TC program would stay on lo until it exits.
func command(o options, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if o.relayCPUs != "" {
		cmd = exec.Command("taskset", append([]string{"-c", o.relayCPUs, name}, args...)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return cmd
}

// Relay port ranges: 20,000 ports each, so 10,000 allocations (and those
// of the previous count, while being released) fit. turnpike's lies below
// the kernel's ephemeral range; coturn's overlaps it, and coturn retries a
// port the bench's own client sockets happen to hold.
// startTurnpike starts binary as a relay named name, with its files in dir;
// with fastPath, as a relay pod runs by default: the relay as the
// unprivileged relayUID with `--fast-path Auto` and the agent's socket, and
// the fast-path agent (`turnpike fastpath`) as root, which loads the program
// on lo (where all the bench's traffic goes); both log at info, so the fast
// path's lines are there to show if it does not attach.
func startTurnpike(o options, name, binary, dir string, fastPath bool) (*relayProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	internal, err := freePort()
	if err != nil {
		return nil, err
	}
	key := stun.NewLongTermIntegrity(user, realm, password)
	level, extra := "warn", ""
	if fastPath {
		level, extra = "info", "fastPath: {interfaces: [lo]}\n"
	}
	relayYAML := fmt.Sprintf(`version: turnpike.dev/relay/v1
realm: %s
listeners: [{name: udp, protocol: UDP, port: %d}]
relayPortRange: {min: 10000, max: 29999}
addresses: {bind: ["%s"]}
peerPolicy: {allow: ["%s"]}
internal: {address: 127.0.0.1, metricsPort: %d, healthPort: %d}
drainGracePeriod: 1s
log: {level: %s, format: text}
%s`, realm, port, o.loopback, netip.PrefixFrom(o.peerIP, o.peerIP.BitLen()), internal, internal, level, extra)
	credsYAML := fmt.Sprintf("version: turnpike.dev/relay/v1\ngeneration: 1\nusers: [{username: %s, key: %x}]\n", user, []byte(key))
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(relayYAML), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "credentials.yaml"), []byte(credsYAML), 0o600); err != nil {
		return nil, err
	}
	args := []string{"relay", "--config", filepath.Join(dir, "relay.yaml"), "--credentials", dir}
	logs := &relayLog{name: name}
	r := &relayProc{
		name: name, addr: netip.AddrPortFrom(o.loopback, uint16(port)).String(), client: o.clientIP,
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", internal), log: logs, fastPath: fastPath,
	}
	if fastPath {
		socket, err := startAgent(o, r, binary, dir)
		if err != nil {
			return nil, err
		}
		args = append(args, "--fast-path", "Auto", "--fast-path-socket", socket)
	}
	if fastPath {
		if binary, err = copyForRelayUser(binary, dir); err != nil {
			stopAgent(r)
			return nil, err
		}
	}
	r.cmd = command(o, binary, args...)
	r.cmd.Stderr = logs
	if fastPath {
		r.cmd.SysProcAttr.Credential = &syscall.Credential{Uid: relayUID, Gid: relayUID, Groups: []uint32{}}
	}
	if err := r.cmd.Start(); err != nil {
		stopAgent(r)
		return nil, err
	}
	return r, waitUntilServing(r)
}

func startCoturn(o options, dir string) (*relayProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := command(o, o.turnserver, "-n", "--no-cli", "--no-tcp", "--no-tls", "--no-dtls", "--no-tcp-relay",
		"--listening-ip", o.loopback.String(), "--relay-ip", o.loopback.String(), "--listening-port", strconv.Itoa(port),
		"--min-port", "40000", "--max-port", "59999", "--lt-cred-mech", "--realm", realm,
		"--user", user+":"+password, "--userdb", filepath.Join(dir, "turndb"),
		"--pidfile", filepath.Join(dir, "turnserver.pid"), "--log-file", "stdout", "--no-stdout-log", "--simple-log",
		"--no-rfc5780", "--no-stun-backward-compatibility")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relayProc{name: coturnName, addr: netip.AddrPortFrom(o.loopback, uint16(port)).String(), cmd: cmd, client: o.clientIP}
	return r, waitUntilServing(r)
}

// waitUntilServing retries an allocation until the relay answers.
func waitUntilServing(r *relayProc) error {
	var err error
	for range 50 {
		var c *client
		if c, err = openChannel(r.client, r.addr, netip.AddrPort{}); err == nil {
			c.release()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not start serving: %w", r.name, err)
}

// stop stops a relay, and then its fast-path agent if it has one.
func stop(r *relayProc) {
	stopProcess(r.cmd)
	stopAgent(r)
}

func stopProcess(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
	}
}
