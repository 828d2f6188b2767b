package probe

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"sigs.k8s.io/yaml"

	"github.com/turnpike-dev/turnpike/relay"
	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// Servers the probe is tested against: turnpike's relay, started in-process
// with relay.Run, and coturn's turnserver. Both listen and relay on this
// machine's first non-loopback address (serverAddress): the probe's echo
// peer is a second allocation, whose relayed address must not be one that
// relays refuse whatever their config (loopback). turnpike's relay runs
// with its default peer policy, which admits another allocation of the
// same relay.

const (
	testRealm    = "probe.test"
	testUser     = "alice"
	testPassword = "alice-password"
	testSecret   = "probe-shared-secret"
)

// serverAddress is the address the test servers use, or a skip (a fail in CI).
func serverAddress(t *testing.T) string {
	t.Helper()
	ip, err := LocalPeerAddress(false)
	if err != nil {
		needTool(t, "a non-loopback IPv4 address for the test servers")
	}
	return ip.String()
}

// needTool skips locally and fails in CI (env CI set), where everything must exist.
func needTool(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing (CI must provide it)", what)
	}
	t.Skipf("%s is missing; skipping (this would fail in CI)", what)
}

type relayPorts struct {
	plain, tls int
	cert       string // the TLS and DTLS listeners' self-signed certificate
}

// startRelay runs turnpike's relay with UDP, TCP, TLS and DTLS listeners
// until the test ends.
func startRelay(t *testing.T, quotas config.Quotas) relayPorts {
	t.Helper()
	dir := t.TempDir()
	ports := relayPorts{plain: testutil.FreePort(t), tls: testutil.FreePort(t)}
	cert, key := testutil.WriteSelfSignedCert(t, dir, net.ParseIP(serverAddress(t)))
	ports.cert = cert
	cfg := &config.Relay{
		Version: config.Version,
		Realm:   testRealm,
		Listeners: []config.Listener{
			{Name: "udp", Protocol: config.UDP, Port: ports.plain},
			{Name: "tcp", Protocol: config.TCP, Port: ports.plain},
			{Name: "tls", Protocol: config.TLS, Port: ports.tls, CertFile: cert, KeyFile: key},
			{Name: "dtls", Protocol: config.DTLS, Port: ports.tls, CertFile: cert, KeyFile: key},
		},
		// Below the kernel's ephemeral range, so it never meets testutil.FreePort's ports.
		RelayPortRange:   config.PortRange{Min: 30000, Max: 32000},
		Addresses:        config.Addresses{Bind: []string{serverAddress(t)}},
		Quotas:           quotas,
		Internal:         config.Internal{Address: "127.0.0.1", MetricsPort: testutil.FreePort(t), HealthPort: testutil.FreePort(t)},
		DrainGracePeriod: config.Duration{Duration: 100 * time.Millisecond},
	}
	creds := &config.Credentials{
		Version:       config.Version,
		Generation:    1,
		Users:         []config.User{{Username: testUser, Key: hex.EncodeToString(turn.GenerateAuthKey(testUser, testRealm, testPassword))}},
		SharedSecrets: []config.SharedSecret{{Name: "probe", Secret: testSecret}},
	}
	writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
	writeYAML(t, filepath.Join(dir, config.CredentialsFile), creds)

	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Options{
			ConfigPath: filepath.Join(dir, config.RelayFile), CredentialsDir: dir,
			LogOutput: &testLog{t}, NodeName: "-", HostIP: "",
			Started: func(*relay.Relay) { close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		cancel()
		t.Fatalf("relay did not start: %v", err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return ports
}

// testLog sends relay logs to the test log (shown on failure or with -v).
type testLog struct{ t *testing.T }

func (l *testLog) Write(p []byte) (int, error) { l.t.Log(string(p)); return len(p), nil }

// startCoturn runs turnserver with a static user and long-term credentials.
func startCoturn(t *testing.T) int {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		needTool(t, "turnserver (Debian package coturn)")
	}
	dir := t.TempDir()
	port := testutil.FreePort(t)
	conf := "listening-ip=" + serverAddress(t) + "\nrelay-ip=" + serverAddress(t) + "\n" +
		"listening-port=" + strconv.Itoa(port) + "\n" +
		"min-port=32001\nmax-port=32500\n" +
		"realm=" + testRealm + "\nlt-cred-mech\nuser=" + testUser + ":" + testPassword + "\n" +
		"no-tls\nno-dtls\nno-cli\nno-stdout-log\nsimple-log\n" +
		"log-file=" + filepath.Join(dir, "turnserver.log") + "\n" +
		"pidfile=" + filepath.Join(dir, "turnserver.pid") + "\n" +
		"userdb=" + filepath.Join(dir, "turndb") + "\n"
	confPath := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			logs, _ := os.ReadFile(filepath.Join(dir, "turnserver.log"))
			t.Logf("turnserver log:\n%s", logs)
		}
	})
	addr := net.JoinHostPort(serverAddress(t), strconv.Itoa(port))
	waitForTCP(t, addr)
	testutil.WaitForSTUN(t, addr) // the UDP listener may come later
	return port
}

// waitForTCP waits until something accepts connections at addr (bounded).
func waitForTCP(t *testing.T, addr string) {
	t.Helper()
	for range 100 {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after 5s", addr)
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err == nil {
		err = os.WriteFile(path, data, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// probeKind runs a probe and returns the failure kind, "" on success.
func probeKind(t *testing.T, o Options) (*Result, string) {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Second
	}
	if o.Pings == 0 {
		o.Pings = 3
	}
	res, err := Run(context.Background(), o)
	if err == nil {
		return res, ""
	}
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("probe error %v is not a *probe.Error", err)
	}
	t.Logf("probe failed as expected? kind=%s code=%d: %v", pe.Kind, pe.Code, err)
	return nil, pe.Kind
}
