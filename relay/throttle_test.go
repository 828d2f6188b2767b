package relay

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestAuthThrottle(t *testing.T) {
	th := newAuthThrottle()
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	now := time.Unix(1e9, 0)
	for range 3 {
		if th.blocked(a, now) {
			t.Fatal("blocked before its burst of failures was used")
		}
		th.failed(a, 1, 3, now)
	}
	if !th.blocked(a, now) || th.blocked(b, now) {
		t.Fatalf("after 3 failures (burst 3): a blocked %v, b blocked %v; want true, false", th.blocked(a, now), th.blocked(b, now))
	}
	if th.blocked(a, now.Add(time.Second)) {
		t.Error("still blocked after a second refilled a token")
	}
	th.sweep(now.Add(time.Second))
	if len(th.buckets) != 1 {
		t.Errorf("sweep dropped a bucket that is not full yet: %d left", len(th.buckets))
	}
	th.sweep(now.Add(3 * time.Second))
	if len(th.buckets) != 0 {
		t.Errorf("sweep kept %d full buckets", len(th.buckets))
	}
}

// TestWrongPasswordFlood: a client that keeps failing authentication is
// answered for its burst, then dropped unanswered and counted; another
// client (from another address) keeps being served.
func TestWrongPasswordFlood(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	cfg.Limits.AuthFailuresPerSecond, cfg.Limits.AuthFailureBurst = 0.1, 5
	tr := startRelay(t, cfg, baseCredentials())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))

	attacker := dialRaw(t, "udp", addr, testUser, "wrong password")
	if code, _ := attacker.allocate(17, false); code == 0 {
		t.Fatal("a wrong password allocated")
	}
	attacker.readTimeout = 200 * time.Millisecond
	answered := 0
	for range 20 {
		req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0}),
			stun.NewUsername(testUser), stun.NewRealm(testRealm), attacker.nonce, attacker.integrity)
		if _, err := attacker.conn.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		if _, err := attacker.read(); err == nil {
			answered++
		}
	}
	// The first allocate used one failure; 4 more are answered, then none.
	if answered != 4 {
		t.Errorf("%d of 20 wrong-password Allocates answered, want 4 (the burst of 5 less the first)", answered)
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_auth_throttled_total"); got != 16 {
		t.Errorf("auth_throttled_total = %v, want 16", got)
	}
	dialRawFrom(t, "127.0.0.2", "udp", addr, testUser, testPassword).mustAllocate(false)
}
