package relay

import (
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// fakeClock replaces timeNow for credential-expiry tests, so they move time
// instead of waiting for it.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }
func useFakeClock(t *testing.T) *fakeClock {
	c := &fakeClock{}
	timeNow = c.now
	// Registered before the relay starts, so it runs after the relay stopped.
	t.Cleanup(func() { timeNow = time.Now })
	return c
}

func TestUnauthenticatedAllocateFails(t *testing.T) {
	tr := startRelay(t, baseConfig(t, t.TempDir()), baseCredentials())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	c := dialRaw(t, "udp", addr, testUser, testPassword)
	// An Allocate without MESSAGE-INTEGRITY (with or without a username)
	// gets 401, never an allocation.
	for _, extra := range [][]stun.Setter{nil, {stun.NewUsername(testUser), stun.NewRealm(testRealm)}} {
		setters := append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})}, extra...)
		req := stun.MustBuild(setters...)
		if _, err := c.conn.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		if code := errorCode(c.awaitResponse(req.TransactionID)); code != 401 {
			t.Errorf("unauthenticated Allocate: got %d, want 401", code)
		}
	}
	if tr.AllocationCount() != 0 {
		t.Fatal("an unauthenticated Allocate created an allocation")
	}
	for _, tc := range []struct{ user, pass string }{
		{testUser, "wrong-password"},
		{"mallory", "whatever"},
	} {
		if code, _ := dialRaw(t, "udp", addr, tc.user, tc.pass).allocate(17, false); code == 0 {
			t.Errorf("allocation as %s/%s succeeded", tc.user, tc.pass)
		}
	}
	if counterValue(t, tr.Relay, "turnpike_relay_auth_failures_total", "reason", authBadIntegrity) == 0 {
		t.Error("auth_failures_total{reason=bad_integrity} did not count the wrong password")
	}
}

// TestRESTCredentials: REST credentials work, expired ones are refused, and
// across a secret rotation both secrets work inside the overlap and only
// the new one after it.
func TestRESTCredentials(t *testing.T) {
	clock := useFakeClock(t)
	t0 := time.Now()
	overlapEnd := t0.Add(time.Hour)
	newFrom := t0.Add(-time.Minute)
	creds := baseCredentials()
	creds.SharedSecrets = []config.SharedSecret{
		{Name: "old", Secret: "old-secret-0123456789", NotAfter: &overlapEnd},
		{Name: "new", Secret: "new-secret-0123456789", NotBefore: &newFrom},
	}
	tr := startRelay(t, baseConfig(t, t.TempDir()), creds)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	allocateAs := func(secret string, expiry time.Time) int {
		user, pass := restCredentials(secret, "carol", expiry)
		code, _ := dialRaw(t, "udp", addr, user, pass).allocate(17, false)
		return code
	}
	expiry := t0.Add(2 * time.Hour)

	if code := allocateAs("old-secret-0123456789", expiry); code != 0 {
		t.Errorf("old secret inside the overlap: error %d", code)
	}
	if code := allocateAs("new-secret-0123456789", expiry); code != 0 {
		t.Errorf("new secret inside the overlap: error %d", code)
	}
	if code := allocateAs("new-secret-0123456789", t0.Add(-time.Second)); code == 0 {
		t.Error("expired REST credential was accepted")
	}
	if code := allocateAs("some-other-secret-0123", expiry); code == 0 {
		t.Error("credential signed by an unknown secret was accepted")
	}

	clock.advance(time.Hour + time.Second) // past the overlap
	if code := allocateAs("old-secret-0123456789", expiry); code == 0 {
		t.Error("old secret accepted after the overlap")
	}
	if code := allocateAs("new-secret-0123456789", expiry); code != 0 {
		t.Errorf("new secret after the overlap: error %d", code)
	}
	if counterValue(t, tr.Relay, "turnpike_relay_auth_failures_total", "reason", authExpired) == 0 {
		t.Error("auth_failures_total{reason=expired} did not count")
	}
}

// TestStaticPasswordRotation: while a static password rotates, the bundle
// holds both keys of the user; a client with the old password allocates
// until the old key's notAfter, a client with the new one at once.
func TestStaticPasswordRotation(t *testing.T) {
	clock := useFakeClock(t)
	overlapEnd := time.Now().Add(time.Hour)
	creds := baseCredentials()
	creds.Users = append(creds.Users,
		config.User{Username: "sfu", Key: keyHex("sfu", "new-password")},
		config.User{Username: "sfu", Key: keyHex("sfu", "old-password"), NotAfter: &overlapEnd})
	tr := startRelay(t, baseConfig(t, t.TempDir()), creds)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	allocateWith := func(password string) int {
		code, _ := dialRaw(t, "udp", addr, "sfu", password).allocate(17, false)
		return code
	}
	if code := allocateWith("old-password"); code != 0 {
		t.Errorf("old password inside the overlap: error %d", code)
	}
	if code := allocateWith("new-password"); code != 0 {
		t.Errorf("new password inside the overlap: error %d", code)
	}
	clock.advance(time.Hour + time.Second)
	if code := allocateWith("old-password"); code == 0 {
		t.Error("old password accepted after the overlap")
	}
	if code := allocateWith("new-password"); code != 0 {
		t.Errorf("new password after the overlap: error %d", code)
	}
}

// TestReload: credentials and peer policy change without dropping an
// allocation; a broken file changes nothing and counts a failed reload; a
// listener change is only logged.
func TestReload(t *testing.T) {
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	withBob := baseCredentials()
	withBob.Users = append(withBob.Users, config.User{Username: "bob", Key: keyHex("bob", "bob-password")})
	tr := startRelay(t, cfg, withBob)
	peer := startEchoPeer(t, peerIP)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))

	c := dialRaw(t, "udp", addr, testUser, testPassword)
	c.mustAllocate(false)
	if code := c.createPermission(peerIP); code != 0 {
		t.Fatalf("CreatePermission: %d", code)
	}
	gen := tr.gen.Load()

	// Broken relay.yaml and broken credentials.yaml: nothing changes.
	good, err := os.ReadFile(filepath.Join(tr.dir, config.RelayFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, broken := range []struct{ file, content string }{
		{config.RelayFile, strings.Replace(string(good), "realm:", "relm:", 1)},
		{config.RelayFile, "version: turnpike.dev/relay/v1\nrealm: x\nlisteners: []\n"},
		{config.CredentialsFile, "version: turnpike.dev/relay/v1\nusers: [{username: alice, key: nothex}]\n"},
	} {
		if err := os.WriteFile(filepath.Join(tr.dir, broken.file), []byte(broken.content), 0o600); err != nil {
			t.Fatal(err)
		}
		tr.Reload()
		tr.writeFiles(t, cfg, withBob) // restore for the next round
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_config_reloads_total", "result", "failure"); got != 3 {
		t.Errorf("failed reloads = %v, want 3", got)
	}
	if tr.gen.Load() != gen {
		t.Errorf("config generation moved from %d to %d on broken files", gen, tr.gen.Load())
	}
	c.roundTrip(peer.addr, 0, []byte("still relaying after broken reloads"))
	if code := dialRaw(t, "tcp", addr, testUser, testPassword).mustAllocateCode(); code != 0 {
		t.Errorf("alice refused after broken reloads: %d", code)
	}

	// A valid change: bob removed, dave added, peer denied, new listener
	// port (needs a restart: logged, not applied).
	creds := baseCredentials()
	creds.Generation = 2
	creds.Users = append(creds.Users, config.User{Username: "dave", Key: keyHex("dave", "dave-password")})
	cfg2 := *cfg
	cfg2.PeerPolicy.Deny = []string{netip.PrefixFrom(peerIP, 32).String()}
	cfg2.Listeners = append([]config.Listener{}, cfg.Listeners...)
	cfg2.Listeners[1].Port = testutil.FreePort(t)
	tr.writeFiles(t, &cfg2, creds)
	// This time through SIGHUP, as an operator would (the relay's own poll
	// interval is an hour in tests, so only the signal can cause it).
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SIGHUP reload", func() bool { return tr.gen.Load() != gen })
	if tr.gen.Load() != gen+1 {
		t.Fatalf("config generation = %d, want %d", tr.gen.Load(), gen+1)
	}
	if code := dialRaw(t, "udp", addr, "dave", "dave-password").mustAllocateCode(); code != 0 {
		t.Errorf("new user dave refused: %d", code)
	}
	if code := dialRaw(t, "udp", addr, "bob", "bob-password").mustAllocateCode(); code == 0 {
		t.Error("removed user bob still allocates")
	}
	// The existing allocation survives (its permission was granted before).
	c.roundTrip(peer.addr, 0, []byte("still relaying after a good reload"))
	if code := c.createPermission(peerIP); code != 403 {
		t.Errorf("peer denied by the new policy: got %d, want 403", code)
	}
	if !strings.Contains(tr.logs.String(), "apply after a restart") {
		t.Error("listener change was not reported as needing a restart")
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_credentials_generation"); got != 2 {
		t.Errorf("credentials_generation = %v, want 2", got)
	}
}

// TestDrain: on cancellation the relay turns unready and refuses new
// allocations, while an existing allocation keeps relaying; Run returns
// once that allocation ends.
func TestDrain(t *testing.T) {
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	cfg.DrainGracePeriod = config.Duration{Duration: 5 * time.Minute} // only a bound: the test ends the allocation itself
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	health := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Internal.HealthPort))

	if got := httpStatus(t, health+"/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz before drain = %d", got)
	}
	c := dialRaw(t, "udp", addr, testUser, testPassword)
	c.mustAllocate(false)
	if code := c.createPermission(peerIP); code != 0 {
		t.Fatalf("CreatePermission: %d", code)
	}

	tr.cancel()
	waitFor(t, "relay to start draining", func() bool { return tr.draining.Load() })
	if got := httpStatus(t, health+"/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining = %d, want 503", got)
	}
	if got := httpStatus(t, health+"/livez"); got != http.StatusOK {
		t.Errorf("/livez while draining = %d, want 200", got)
	}
	if code, _ := dialRaw(t, "udp", addr, testUser, testPassword).allocate(17, false); code != 486 {
		t.Errorf("new allocation while draining: got %d, want 486", code)
	}
	c.roundTrip(peer.addr, 0, []byte("relaying while draining"))
	if code := c.refresh(0); code != 0 { // the client ends its allocation
		t.Fatalf("Refresh(0): %d", code)
	}
	select {
	case err := <-tr.done:
		tr.done = nil
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("relay did not exit after its last allocation ended")
	}
}

func (c *rawClient) mustAllocateCode() int {
	code, _ := c.allocate(17, false)
	return code
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	return res.StatusCode
}

// waitFor polls cond until it holds, failing after a generous bound. It
// waits for an event; it does not assert how long the event took.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
