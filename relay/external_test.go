package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// Tests against external programs: coturn's turnutils_uclient as a client,
// a real Prometheus as a scraper, promtool as a linter, and the built
// turnpike binary as a standalone relay.

// startProcess runs a program until the test ends.
func startProcess(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out)
		}
	})
	return cmd
}

var (
	uclientLost  = regexp.MustCompile(`Total lost packets (\d+) \(`)
	uclientTotal = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
)

// TestCoturnUclient runs coturn's test client against the relay with a
// static user and with REST credentials (-W), over UDP and TCP, and
// requires that every message came back.
func TestCoturnUclient(t *testing.T) {
	uclient := lookTool(t, "turnutils_uclient")
	peerBin := lookTool(t, "turnutils_peer")
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	tr := startRelay(t, cfg, baseCredentials())
	peerPort := testutil.FreePort(t)
	startProcess(t, peerBin, "-L", peerIP.String(), "-p", strconv.Itoa(peerPort))

	const messages, clients = 20, 2
	for _, tc := range []struct {
		name string
		auth []string
		tcp  bool
	}{
		{"static-udp", []string{"-u", testUser, "-w", testPassword}, false},
		{"static-tcp", []string{"-u", testUser, "-w", testPassword}, true},
		{"rest-secret-udp", []string{"-u", "uclient", "-W", testSecret}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// -c: no RTCP allocation (pion has no EVEN-PORT pairs); never -g:
			// pion answers DONT-FRAGMENT with 420 and uclient gives up.
			args := []string{"-c", "-n", strconv.Itoa(messages), "-m", strconv.Itoa(clients), "-z", "5",
				"-p", strconv.Itoa(tr.port), "-e", peerIP.String(), "-r", strconv.Itoa(peerPort)}
			if tc.tcp {
				args = append(args, "-t")
			}
			args = append(append(args, tc.auth...), "127.0.0.1")
			res := runUclient(t, uclient, args...)
			if res.err != nil {
				t.Fatalf("turnutils_uclient: %v\n%s", res.err, res.out)
			}
			if res.lost != 0 || res.sent != messages*clients || res.received != res.sent {
				t.Fatalf("lost %d, sent %d, received %d (want 0, %d, %d)\n%s", res.lost, res.sent, res.received, messages*clients, messages*clients, res.out)
			}
		})
	}
}

// uclientResult is what a turnutils_uclient run reports.
type uclientResult struct {
	lost, sent, received int
	out                  []byte
	err                  error // the run failed, or its output could not be parsed
}

// runUclient runs turnutils_uclient (bounded to a minute) and reads its
// packet counts.
func runUclient(t *testing.T, uclient string, args ...string) uclientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, uclient, args...).CombinedOutput()
	res := uclientResult{out: out, err: err}
	if err != nil {
		return res
	}
	lost := uclientLost.FindSubmatch(out)
	var totals [][]byte
	for _, line := range strings.Split(string(out), "\n") {
		if m := uclientTotal.FindSubmatch([]byte(line)); m != nil {
			totals = m
		}
	}
	if lost == nil || totals == nil {
		res.err = fmt.Errorf("cannot parse turnutils_uclient output")
		return res
	}
	res.lost, _ = strconv.Atoi(string(lost[1]))
	res.sent, _ = strconv.Atoi(string(totals[1]))
	res.received, _ = strconv.Atoi(string(totals[2]))
	return res
}

// TestPrometheusScrape has a real Prometheus scrape the relay and reads the
// relayed packet count back through its query API.
func TestPrometheusScrape(t *testing.T) {
	prom := lookTool(t, "prometheus")
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	if code := c.createPermission(peerIP); code != 0 {
		t.Fatalf("CreatePermission: %d", code)
	}
	for i := range 5 {
		c.roundTrip(peer.addr, 0, []byte(fmt.Sprintf("packet %d", i)))
	}
	want := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp")
	if want < 5 {
		t.Fatalf("relay counted %v packets, want >= 5", want)
	}

	dir := t.TempDir()
	promCfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: turnpike-relay\n    static_configs:\n      - targets: [%q]\n", tr.metrics)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t)))
	startProcess(t, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+web)

	query := `sum(turnpike_relay_relayed_packets_total{direction="client_to_peer",transport="udp"})`
	var got string
	waitFor(t, "Prometheus to scrape the relayed packet count", func() bool {
		got = promQuery(web, query)
		return got == strconv.FormatFloat(want, 'f', -1, 64)
	})
}

// promQuery returns the value of an instant query's first sample, or "".
func promQuery(web, query string) string {
	res, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(res.Body).Decode(&body) != nil || len(body.Data.Result) == 0 || len(body.Data.Result[0].Value) != 2 {
		return ""
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	return s
}

// TestPromtoolCheckMetrics lints the exposition with promtool.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := lookTool(t, "promtool")
	tr := startRelay(t, baseConfig(t, t.TempDir()), baseCredentials())
	res, err := http.Get("http://" + tr.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "turnpike_relay_relayed_packets_total") {
		t.Fatal("metrics lack turnpike_relay_relayed_packets_total")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestStandaloneBinary builds turnpike and runs `turnpike relay` from the
// example config in testdata/standalone (ports moved to free ones), with no
// cluster, then serves a pion client and exits cleanly on SIGTERM.
func TestStandaloneBinary(t *testing.T) {
	peerIP := localAddr(t, false, false)
	dir := t.TempDir()
	bin := filepath.Join(dir, "turnpike")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	files, err := config.ReadFiles("testdata/standalone/relay.yaml", "")
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	cfg, _, err := files.Parse()
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	port := testutil.FreePort(t)
	for i := range cfg.Listeners {
		cfg.Listeners[i].Port = port
	}
	cfg.Internal.MetricsPort, cfg.Internal.HealthPort = testutil.FreePort(t), testutil.FreePort(t)
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)

	cmd := startProcess(t, bin, "relay", "--config", filepath.Join(dir, config.RelayFile), "--credentials", "testdata/standalone")
	health := "http://" + net.JoinHostPort(cfg.Internal.Address, strconv.Itoa(cfg.Internal.HealthPort))
	waitFor(t, "the standalone relay to be ready", func() bool {
		res, err := http.Get(health + "/readyz")
		if err != nil {
			return false
		}
		_ = res.Body.Close()
		return res.StatusCode == http.StatusOK
	})

	peer := startEchoPeer(t, peerIP)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: "alice", Password: "alice-password", Realm: "example.org", LoggerFactory: quietLoggers(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	echoThrough(t, relayConn, net.UDPAddrFromAddrPort(peer.addr), "standalone")
	_ = relayConn.Close() // releases the allocation, so the drain ends at once
	client.Close()

	var status config.Status
	res, err := http.Get(health + "/status")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(res.Body).Decode(&status)
	_ = res.Body.Close()
	if err != nil || len(status.ExternalAddresses) != 1 || status.ExternalAddresses[0] != "127.0.0.1" || status.CredentialsGeneration != 1 {
		t.Errorf("/status = %+v (%v)", status, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("relay exited with %v", err)
	}
}
