package adversarial

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/netlab"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// The lab every test builds. 198.18.0.0/15 (RFC 2544, benchmarking) plays
// the internet, as in the e2e lab; nothing leaves the namespaces.
//
//	pub ns (clients, peers)          node ns (the relay)                    dead ns
//	198.18.1.1 ────────────────── 198.18.1.2  HOST_IP: bound, advertised
//	2001:db8:1::1                  198.18.1.3  on the same interface, neither
//	198.18.0.2, 2001:db8::2 (peers)            bound nor advertised
//	                               2001:db8:1::2 bound, advertised
//	                               10.99.0.2, fd99::2 ─────────────────── 10.99.0.1, fd99::1
//	                               default routes ──────────────────────> a dead end that
//	                                                                       counts what arrives
//
// The node reaches the peers through pub; everything else it sends goes
// down its default route into the dead end, which forwards nothing and
// counts every TCP and UDP packet that arrives: a peer the relay should
// have refused shows up there as a packet on the wire.
const (
	labNode    = "adv-node"
	nodeAddr   = "198.18.1.2"
	nodeAddr2  = "198.18.1.3"
	nodeAddr6  = "2001:db8:1::2"
	clientAddr = "198.18.1.1"
	peerAddr   = "198.18.0.2"
	peerAddr6  = "2001:db8::2"

	labRealm    = "adversarial.test"
	labUser     = "alice"
	labPassword = "alice-password"

	turnPort    = 3478
	tlsPort     = 5349
	metricsPort = 9641
	healthPort  = 9642
	relayMin    = 40000
	relayMax    = 40999
)

// relayBinary is the binary under attack: $TURNPIKE_BIN, or this checkout
// built once by TestMain.
var relayBinary string

func TestMain(m *testing.M) {
	relayBinary = os.Getenv("TURNPIKE_BIN")
	var tmp string
	if relayBinary == "" && os.Geteuid() == 0 { // the tests skip without root; no build needed then
		var err error
		if tmp, err = os.MkdirTemp("", "adversarial"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		relayBinary = filepath.Join(tmp, "turnpike")
		build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", relayBinary, "github.com/turnpike-dev/turnpike")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	if tmp != "" {
		_ = os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// lab is the network of one test, with its relay.
type lab struct {
	t               *testing.T
	pub, node, dead *netlab.Namespace
	relay           *relayProc
}

// newLab builds the namespaces and starts the relay with the lab's
// relay.yaml, changed by tune (nil for none).
func newLab(t *testing.T, tune func(*config.Relay)) *lab {
	t.Helper()
	nl := netlab.New(t)
	for _, tool := range []string{"ip6tables", "prlimit", "ss"} {
		_, err := exec.LookPath(tool)
		netlab.Require(t, tool+" (Debian: iptables, util-linux, iproute2)", err == nil)
	}
	l := &lab{t: t, pub: nl.Namespace("pub"), node: nl.Namespace("node"), dead: nl.Namespace("dead")}

	pubIf, nodeIf := nl.Link(l.pub, clientAddr+"/24", l.node, nodeAddr+"/24")
	l.node.AddAddress(nodeIf, nodeAddr2+"/24")
	l.pub.AddAddress(pubIf, "2001:db8:1::1/64")
	l.node.AddAddress(nodeIf, nodeAddr6+"/64")
	l.pub.AddAddress(pubIf, peerAddr+"/32")
	l.pub.AddAddress(pubIf, peerAddr6+"/128")
	l.node.Exec("ip", "route", "add", peerAddr+"/32", "via", clientAddr)
	l.node.Exec("ip", "-6", "route", "add", peerAddr6+"/128", "via", "2001:db8:1::1")
	// The peers answer from their own addresses; pub routes them back.
	l.pub.DefaultRoute(nodeAddr)

	deadIf, nodeDeadIf := nl.Link(l.dead, "10.99.0.1/24", l.node, "10.99.0.2/24")
	l.dead.AddAddress(deadIf, "fd99::1/64")
	l.node.AddAddress(nodeDeadIf, "fd99::2/64")
	l.node.DefaultRoute("10.99.0.1")
	l.node.Exec("ip", "-6", "route", "add", "default", "via", "fd99::1")
	// The node knows the dead end's MAC address for good: a neighbour
	// solicitation sent from the relay's address on the other link goes
	// unanswered, and the packets behind it would never leave the node.
	deadMAC := strings.Fields(l.dead.Exec("ip", "-br", "link", "show", "dev", deadIf))[2]
	for _, gw := range []string{"10.99.0.1", "fd99::1"} {
		l.node.Exec("ip", "neigh", "replace", gw, "lladdr", deadMAC, "dev", nodeDeadIf, "nud", "permanent")
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, proto := range []string{"tcp", "udp"} {
			l.dead.Exec(ipt, "-t", "raw", "-A", "PREROUTING", "-i", deadIf, "-p", proto)
		}
	}

	cfg := labConfig(t)
	if tune != nil {
		tune(cfg)
	}
	l.relay = startRelay(t, l, cfg)
	return l
}

// labConfig is relay.yaml for the lab: UDP, TCP and TLS listeners on the
// node address, TCP relaying, the internal listener on the node address
// (so tests can also aim peers at it), the peer ranges allowed, and short
// limits so every timeout passes within a test.
func labConfig(t *testing.T) *config.Relay {
	dir := t.TempDir()
	certFile, keyFile := testutil.WriteSelfSignedCert(t, dir)
	return &config.Relay{
		Version: config.Version,
		Realm:   labRealm,
		Listeners: []config.Listener{
			{Name: "udp", Protocol: config.UDP, Port: turnPort},
			{Name: "tcp", Protocol: config.TCP, Port: turnPort},
			{Name: "tls", Protocol: config.TLS, Port: tlsPort, CertFile: certFile, KeyFile: keyFile},
		},
		UDPSocketsPerListener: 1,
		RelayPortRange:        config.PortRange{Min: relayMin, Max: relayMax},
		TCPRelay:              true,
		Addresses:             config.Addresses{Bind: []string{nodeAddr, nodeAddr6}, External: []string{nodeAddr, nodeAddr6}},
		// The lab's internet is a special-purpose range: the peers' part
		// of it is allowed, as an operator would, and nothing else.
		PeerPolicy: config.PeerPolicy{Allow: []string{peerAddr + "/32", peerAddr6 + "/128"}},
		Limits: config.Limits{
			FirstMessageTimeout: config.Duration{Duration: 2 * time.Second},
			IdleTimeout:         config.Duration{Duration: 3 * time.Second},
		},
		Internal:         config.Internal{Address: nodeAddr, MetricsPort: metricsPort, HealthPort: healthPort},
		DrainGracePeriod: config.Duration{Duration: time.Second},
		Log:              config.Log{Level: "info", Format: "json"},
	}
}

// relayProc is `turnpike relay` running in the node namespace.
type relayProc struct {
	cmd    *exec.Cmd
	pid    int
	logs   *testutil.SyncBuffer
	exited chan error
	http   *http.Client // from the pub namespace
}

// startRelay writes the config files and runs the relay as a relay pod
// would (NODE_NAME, HOST_IP), until it is ready. An older relay that does
// not know relay.yaml's limits block is started again without it, so the
// suite can show what that relay falls to.
func startRelay(t *testing.T, l *lab, cfg *config.Relay) *relayProc {
	t.Helper()
	creds := &config.Credentials{
		Version: config.Version, Generation: 1,
		Users: []config.User{{Username: labUser, Key: hex.EncodeToString(turn.GenerateAuthKey(labUser, labRealm, labPassword))}},
	}
	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, config.CredentialsFile), creds)
	writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
	r, err := runRelay(t, l, dir)
	if err != nil && knowsNoLimits(r.logs.String()) {
		t.Logf("%s does not know relay.yaml's limits block; starting it without", relayBinary)
		cfg.Limits = config.Limits{}
		writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
		r, err = runRelay(t, l, dir)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, r.logs)
	}
	return r
}

// knowsNoLimits is whether a relay's output says it refused relay.yaml
// for its limits block (a relay built before it existed).
func knowsNoLimits(logs string) bool {
	return strings.Contains(logs, "unknown field") && strings.Contains(logs, "limits")
}

// runRelay starts the relay on the files in dir and waits until it is
// ready, or says why it is not.
func runRelay(t *testing.T, l *lab, dir string) (*relayProc, error) {
	t.Helper()
	// A bound, not a timing: the test's own deadline (go test -timeout; the
	// soak runs for its DURATION), so a relay never outlives its test.
	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	cmd := l.node.Command(ctx, relayBinary, "relay", "--config", filepath.Join(dir, config.RelayFile), "--credentials", dir)
	cmd.Env = append(os.Environ(), "NODE_NAME="+labNode, "HOST_IP="+nodeAddr)
	r := &relayProc{cmd: cmd, logs: &testutil.SyncBuffer{}, exited: make(chan error, 1), http: l.pub.HTTPClient()}
	cmd.Stdout, cmd.Stderr = r.logs, r.logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	r.pid = cmd.Process.Pid // ip netns exec execs the relay: same process
	go func() { r.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		defer cancel()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(20 * time.Second):
			t.Error("relay did not stop on SIGTERM")
			_ = cmd.Process.Kill()
			<-r.exited
		}
		if t.Failed() {
			t.Logf("relay logs (last 8 kB):\n%s", tail(r.logs.String(), 8<<10))
		}
	})
	readyBy := time.Now().Add(30 * time.Second) // a failure bound
	for !r.ready() {
		select {
		case err := <-r.exited:
			r.exited <- err // for the cleanup
			return r, fmt.Errorf("relay exited before it was ready: %v", err)
		default:
		}
		if time.Now().After(readyBy) {
			return r, fmt.Errorf("relay not ready after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r, nil
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := config.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ready is whether /readyz answers 200.
func (r *relayProc) ready() bool {
	res, err := r.http.Get(fmt.Sprintf("http://%s:%d/readyz", nodeAddr, healthPort))
	if err != nil {
		return false
	}
	_ = res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// metric returns the value of one series of /metrics, e.g.
// `turnpike_relay_frames_rejected_total{reason="too_large"}`, or 0 when
// the relay does not have it (yet).
func (r *relayProc) metric(t *testing.T, series string) float64 {
	t.Helper()
	res, err := r.http.Get(fmt.Sprintf("http://%s:%d/metrics", nodeAddr, metricsPort))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %s: %v", series, err)
			}
			return f
		}
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return 0
}

// cpuTicks is the relay's user plus system CPU time so far, in clock
// ticks (/proc/<pid>/stat fields 14 and 15).
func (r *relayProc) cpuTicks(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; the fields after it do not.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err1 := strconv.Atoi(f[11])
	stime, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", r.pid, b)
	}
	return utime + stime
}

// clockTicksPerSecond is USER_HZ, 100 on every Linux architecture Go runs on.
const clockTicksPerSecond = 100

// openFiles is how many file descriptors the relay holds.
func (r *relayProc) openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// logLines is how many lines the relay has written so far.
func (r *relayProc) logLines() int { return strings.Count(r.logs.String(), "\n") }

// wirePackets is how many TCP and UDP packets have arrived at the dead end
// (IPv4 and IPv6): traffic the relay sent to a peer outside the lab's peers.
func (l *lab) wirePackets() int {
	l.t.Helper()
	n := 0
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, line := range strings.Split(l.dead.Exec(ipt, "-t", "raw", "-nvxL", "PREROUTING"), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 {
				if pkts, err := strconv.Atoi(f[0]); err == nil {
					n += pkts
				}
			}
		}
	}
	return n
}

// eventually polls cond until it holds or bound passes (a failure bound,
// not a timing assertion).
func eventually(bound time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(bound)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
