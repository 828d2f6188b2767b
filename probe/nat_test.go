package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay"
	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

func TestParseSTUNURL(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"stun:198.51.100.7", "198.51.100.7:3478"},
		{"stun:stun.example.com:3479", "stun.example.com:3479"},
		{"stun:[2001:db8::1]:3478", "[2001:db8::1]:3478"},
		{"stun:[2001:db8::1]", "[2001:db8::1]:3478"},
		{"stun:2001:db8::1", "[2001:db8::1]:3478"},
		{"turn:198.51.100.7", ""},
		{"stun://198.51.100.7", ""},
		{"stun:198.51.100.7:0", ""},
		{"stun:198.51.100.7:99999", ""},
		{"stun:198.51.100.7?transport=udp", ""},
		{"stun:", ""},
		{"198.51.100.7:3478", ""},
	} {
		got, err := ParseSTUNURL(c.in)
		if (err != nil) != (c.want == "") || got != c.want {
			t.Errorf("ParseSTUNURL(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

// startBehaviorRelay runs turnpike's relay on 127.0.0.1 with behaviour
// discovery, 127.0.0.2 (on Linux's loopback without configuration) as the
// alternate address when alternate is set, and returns its STUN address.
func startBehaviorRelay(t *testing.T, alternate bool) string {
	t.Helper()
	dir := t.TempDir()
	port := testutil.FreePort(t)
	bd := &config.BehaviorDiscovery{AlternatePort: testutil.FreePort(t)}
	if alternate {
		bd.AlternateAddresses = []string{"127.0.0.2"}
	}
	cfg := &config.Relay{
		Version: config.Version, Realm: testRealm,
		Listeners:        []config.Listener{{Name: "udp", Protocol: config.UDP, Port: port}},
		RelayPortRange:   config.PortRange{Min: 30000, Max: 30100},
		Addresses:        config.Addresses{Bind: []string{"127.0.0.1"}},
		STUN:             config.STUN{BehaviorDiscovery: bd},
		Internal:         config.Internal{Address: "127.0.0.1", MetricsPort: testutil.FreePort(t), HealthPort: testutil.FreePort(t)},
		DrainGracePeriod: config.Duration{Duration: 100 * time.Millisecond},
	}
	writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Options{ConfigPath: filepath.Join(dir, config.RelayFile), LogOutput: &testLog{t},
			NodeName: "-", Started: func(*relay.Relay) { close(started) }})
	}()
	select {
	case <-started:
	case err := <-done:
		cancel()
		t.Fatalf("relay did not start: %v", err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// TestDiscoverNATOnLoopback: on loopback there is no NAT, and every
// answer gets through: the tests must say so, against turnpike's relay and
// against coturn with two addresses. Against a relay whose node has no
// alternate address they must say the server cannot tell.
func TestDiscoverNATOnLoopback(t *testing.T) {
	servers := map[string]string{"turnpike": startBehaviorRelay(t, true)}
	if bin, err := exec.LookPath("turnserver"); err == nil {
		servers["coturn"] = startCoturnBehavior(t, bin)
	} else {
		needTool(t, "turnserver (Debian package coturn)")
	}
	for name, server := range servers {
		res, err := DiscoverNAT(context.Background(), NATOptions{Server: server, Timeout: time.Second})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !res.NoNAT || res.Mapping != EndpointIndependent || res.Filtering != EndpointIndependent || res.Mapped != res.Local {
			t.Errorf("%s: %+v, want no NAT and endpoint-independent filtering", name, res)
		}
		if want := netip.MustParseAddr("127.0.0.2"); res.Other.Addr() != want {
			t.Errorf("%s: OTHER-ADDRESS %s, want %s", name, res.Other, want)
		}
	}
	_, err := DiscoverNAT(context.Background(), NATOptions{Server: startBehaviorRelay(t, false), Timeout: time.Second})
	if !errors.Is(err, ErrNoBehaviorDiscovery) {
		t.Errorf("against a relay without an alternate address: %v, want ErrNoBehaviorDiscovery", err)
	}
}

// startCoturnBehavior runs coturn on 127.0.0.1 and 127.0.0.2, which turns
// its behaviour discovery on, and returns its STUN address.
func startCoturnBehavior(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	port, altPort := testutil.FreePort(t), testutil.FreePort(t)
	cmd := exec.Command(bin, "-n", "--listening-ip=127.0.0.1", "--listening-ip=127.0.0.2", "--relay-ip=127.0.0.1",
		"--listening-port="+strconv.Itoa(port), "--alt-listening-port="+strconv.Itoa(altPort),
		"--min-port=32501", "--max-port=32600", "--no-tls", "--no-dtls", "--no-cli", "--no-stdout-log",
		"--log-file="+filepath.Join(dir, "turnserver.log"), "--pidfile="+filepath.Join(dir, "turnserver.pid"))
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
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The tests ask for answers from the other address and port too.
	testutil.WaitForSTUN(t, addr, net.JoinHostPort("127.0.0.2", strconv.Itoa(altPort)))
	return addr
}

// TestNATVerdict: every combination gets a verdict, and the ones that
// need TURN say so.
func TestNATVerdict(t *testing.T) {
	for _, c := range []struct {
		res      NATResult
		needTURN bool
	}{
		{NATResult{NoNAT: true, Mapping: EndpointIndependent, Filtering: EndpointIndependent}, false},
		{NATResult{NoNAT: true, Mapping: EndpointIndependent, Filtering: AddressAndPortDependent}, false},
		{NATResult{Mapping: EndpointIndependent, Filtering: AddressDependent}, false},
		{NATResult{Mapping: EndpointIndependent, Filtering: AddressAndPortDependent}, true},
		{NATResult{Mapping: AddressDependent, Filtering: AddressAndPortDependent}, true},
		{NATResult{Mapping: AddressAndPortDependent, Filtering: AddressAndPortDependent}, true},
	} {
		v := c.res.Verdict()
		if got := strings.Contains(v, "need TURN"); got != c.needTURN {
			t.Errorf("%s mapping, %s filtering (no NAT %v): %q; says calls need TURN: %v, want %v",
				c.res.Mapping, c.res.Filtering, c.res.NoNAT, v, got, c.needTURN)
		}
	}
	for _, b := range []Behavior{EndpointIndependent, AddressDependent, AddressAndPortDependent} {
		if b.MappingMeaning() == "" || b.FilteringMeaning() == "" {
			t.Errorf("%s has no meaning", b)
		}
	}
	if !strings.Contains(AddressAndPortDependent.MappingMeaning(), "direct connections will mostly fail; calls will need TURN") {
		t.Errorf("address-and-port-dependent mapping: %q", AddressAndPortDependent.MappingMeaning())
	}
}
