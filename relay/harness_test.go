package relay

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/restauth"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// Test fixtures shared by the integration tests: a relay started through
// Run from files in a temp dir, a UDP echo peer, and helpers for external
// binaries.
//
// Where the test peer lives: the relay hard-denies loopback, so a peer on
// 127.0.0.1 can never be reached, and the relay package has no test-only
// switch to change that (a switch that exists can be misused). Instead the
// peer binds a non-loopback address of this machine (e.g. eth0's), which the
// tests allow-list explicitly. localAddr finds one.

const (
	testRealm    = "turnpike.test"
	testUser     = "alice"
	testPassword = "alice-password"
	testSecret   = "test-shared-secret-0123456789"
)

// testRelay is a relay running in-process from files in dir.
type testRelay struct {
	*Relay
	dir     string
	port    int // UDP and TCP listener port
	tlsPort int // TLS (tcp) and DTLS (udp) listener port
	metrics string
	cancel  context.CancelFunc
	done    chan error
	logs    *testutil.SyncBuffer
}

// baseConfig is a relay on loopback with UDP, TCP, TLS and DTLS listeners.
func baseConfig(t testing.TB, dir string) *config.Relay {
	t.Helper()
	port, tlsPort := testutil.FreePort(t), testutil.FreePort(t)
	certFile, keyFile := testutil.WriteSelfSignedCert(t, dir)
	return &config.Relay{
		Version: config.Version,
		Realm:   testRealm,
		Listeners: []config.Listener{
			{Name: "udp", Protocol: config.UDP, Port: port},
			{Name: "tcp", Protocol: config.TCP, Port: port},
			{Name: "tls", Protocol: config.TLS, Port: tlsPort, CertFile: certFile, KeyFile: keyFile},
			{Name: "dtls", Protocol: config.DTLS, Port: tlsPort, CertFile: certFile, KeyFile: keyFile},
		},
		UDPSocketsPerListener: 2,
		// Below the kernel's ephemeral range, so it never overlaps testutil.FreePort's listener ports.
		RelayPortRange: config.PortRange{Min: 20000, Max: 29999},
		Addresses:      config.Addresses{Bind: loopbackBind()},
		Internal:       config.Internal{Address: "127.0.0.1", MetricsPort: testutil.FreePort(t), HealthPort: testutil.FreePort(t)},
		// Clients in tests leave UDP allocations behind; do not wait for them on stop.
		DrainGracePeriod: config.Duration{Duration: 200 * time.Millisecond},
		Log:              config.Log{Level: "debug", Format: "text"},
	}
}

// baseCredentials has the static user alice and one shared secret.
func baseCredentials() *config.Credentials {
	return &config.Credentials{
		Version:       config.Version,
		Generation:    1,
		Users:         []config.User{{Username: testUser, Key: hex.EncodeToString(turn.GenerateAuthKey(testUser, testRealm, testPassword))}},
		SharedSecrets: []config.SharedSecret{{Name: "s1", Secret: testSecret}},
	}
}

// startRelay writes the config files and runs the relay until the test ends.
func startRelay(t testing.TB, cfg *config.Relay, creds *config.Credentials) *testRelay {
	t.Helper()
	dir := filepath.Dir(cfg.Listeners[2].CertFile)
	writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
	writeYAML(t, filepath.Join(dir, config.CredentialsFile), creds)
	tr := &testRelay{
		dir: dir, port: cfg.Listeners[0].Port, tlsPort: cfg.Listeners[2].Port,
		metrics: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Internal.MetricsPort)),
		done:    make(chan error, 1), logs: &testutil.SyncBuffer{},
	}
	started := make(chan *Relay, 1)
	ctx, cancel := context.WithCancel(context.Background())
	tr.cancel = cancel
	go func() {
		tr.done <- Run(ctx, Options{
			ConfigPath: filepath.Join(dir, config.RelayFile), CredentialsDir: dir,
			LogOutput: tr.logs, Version: "test",
			// Tests call Reload themselves, so nothing happens behind their back.
			ReloadInterval: time.Hour,
			NodeName:       "-", HostIP: "",
			Started: func(r *Relay) { started <- r },
		})
	}()
	select {
	case tr.Relay = <-started:
	case err := <-tr.done:
		t.Fatalf("relay did not start: %v\n%s", err, tr.logs)
	}
	t.Cleanup(func() {
		tr.stop(t)
		if t.Failed() {
			t.Logf("relay logs:\n%s", tr.logs)
		}
	})
	return tr
}

// stop cancels the relay and waits for it to return (idempotent).
func (tr *testRelay) stop(t testing.TB) {
	tr.cancel()
	if tr.done == nil {
		return
	}
	// Stopping drains; with no allocations left that ends at once, and the
	// tests close their clients first.
	select {
	case err := <-tr.done:
		if err != nil {
			t.Errorf("relay returned %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Error("relay did not stop")
	}
	tr.done = nil
}

// writeFiles rewrites the config files (for reload tests).
func (tr *testRelay) writeFiles(t *testing.T, cfg *config.Relay, creds *config.Credentials) {
	t.Helper()
	if cfg != nil {
		writeYAML(t, filepath.Join(tr.dir, config.RelayFile), cfg)
	}
	if creds != nil {
		writeYAML(t, filepath.Join(tr.dir, config.CredentialsFile), creds)
	}
}

func writeYAML(t testing.TB, path string, v any) {
	t.Helper()
	b, err := config.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// haveIPv6 reports whether this machine has IPv6 loopback (some CI
// containers do not). Without it the relay binds IPv4 only and IPv6 cases
// skip (fail in CI).
var haveIPv6 = sync.OnceValue(func() bool {
	c, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
})

func loopbackBind() []string {
	if haveIPv6() {
		return []string{"127.0.0.1", "::1"}
	}
	return []string{"127.0.0.1"}
}

// localAddr returns an address of this machine that is not loopback (nor
// link-local), of the wanted family; private insists on one inside the
// default-deny set (RFC 1918, CGNAT, ULA). It skips the test (fails in CI)
// when there is none.
func localAddr(t *testing.T, v6, private bool) netip.Addr {
	t.Helper()
	pp := mustPolicy(t, config.PeerPolicy{}, nil)
	for _, a := range localAddrs(t) {
		if a.Is6() != v6 {
			continue
		}
		// Tests allow-list the peer, so any address will do unless a private one is wanted.
		if _, reason := pp.check(a); !private || reason == denyPrivate {
			return a
		}
	}
	needTool(t, fmt.Sprintf("a non-loopback local address (IPv6=%v, private=%v)", v6, private), false)
	return netip.Addr{}
}

// localPrivateAddr is a local address in the default-deny set, of either family.
func localPrivateAddr(t *testing.T) netip.Addr {
	t.Helper()
	// IPv4 first; an IPv6 peer needs IPv6 allocations, so IPv6 loopback.
	for _, v6 := range []bool{false, true} {
		for _, a := range localAddrs(t) {
			if a.Is6() != v6 || (v6 && !haveIPv6()) {
				continue
			}
			if _, reason := mustPolicy(t, config.PeerPolicy{}, nil).check(a); reason == denyPrivate {
				return a
			}
		}
	}
	needTool(t, "a local address in a private range (RFC 1918, CGNAT or ULA)", false)
	return netip.Addr{}
}

// localAddrs lists this machine's addresses except loopback and link-local.
func localAddrs(t *testing.T) []netip.Addr {
	t.Helper()
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().IsGlobalUnicast() {
			out = append(out, p.Addr())
		}
	}
	return out
}

// needTool skips a test that lacks something from the environment, except in
// CI (env CI set), where CI installs everything and a skip would hide a
// failure.
func needTool(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing (CI must provide it)", what)
	}
	t.Skipf("%s is missing; skipping (this would fail in CI)", what)
}

// lookTool finds an external binary or skips/fails as needTool does.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	needTool(t, name, err == nil)
	return p
}

// echoPeer is a UDP peer that sends every datagram back.
type echoPeer struct {
	conn *net.UDPConn
	addr netip.AddrPort
}

func startEchoPeer(t *testing.T, ip netip.Addr) *echoPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return &echoPeer{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// restCredentials makes TURN REST API credentials that expire at expiry.
func restCredentials(secret, user string, expiry time.Time) (username, password string) {
	username = restauth.Username(expiry, user)
	return username, restauth.Password(secret, username)
}

var _ io.Writer = (*testutil.SyncBuffer)(nil)
