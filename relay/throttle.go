package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/time/rate"
)

// authThrottle limits how often one client address may fail
// authentication. Every failure takes a token from the address's bucket
// (limits.authFailuresPerSecond, limits.authFailureBurst); while the
// bucket is empty, the gate drops the address's authenticated requests
// unanswered, so a password-guessing or key-burning flood gets neither
// answers nor CPU (each check is an HMAC over the message). Requests
// without MESSAGE-INTEGRITY still get their 401 challenge, which costs
// nothing to compute. Clients behind one NAT address share a bucket; the
// default burst leaves room for a few of them mistyping at once.
type authThrottle struct {
	mu      sync.Mutex
	buckets map[netip.Addr]*rate.Limiter
}

// maxThrottled bounds the table. When it is full, buckets that have
// refilled (addresses that stopped failing) are dropped first; a flood
// from more addresses than this loses its oldest entries' state, which
// costs the flood, not the relay.
const maxThrottled = 1 << 16

func newAuthThrottle() *authThrottle {
	return &authThrottle{buckets: map[netip.Addr]*rate.Limiter{}}
}

// failed records a failed authentication from a.
func (t *authThrottle) failed(a netip.Addr, perSecond float64, burst int, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.buckets[a]
	if !ok {
		if len(t.buckets) >= maxThrottled {
			t.sweepLocked(now)
		}
		if len(t.buckets) >= maxThrottled {
			clear(t.buckets)
		}
		b = rate.NewLimiter(rate.Limit(perSecond), burst)
		t.buckets[a] = b
	}
	b.AllowN(now, 1)
}

// blocked reports whether a has used up its failures for now.
func (t *authThrottle) blocked(a netip.Addr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.buckets[a]
	return ok && b.TokensAt(now) < 1
}

// sweep drops the buckets that are full again.
func (t *authThrottle) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
}

func (t *authThrottle) sweepLocked(now time.Time) {
	for a, b := range t.buckets {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(t.buckets, a)
		}
	}
}

// authFailed records a failed authentication from client.
func (r *Relay) authFailed(client net.Addr) {
	if _, ap, ok := addrPort(client); ok {
		l := r.current().cfg.Limits
		r.throttle.failed(ap.Addr(), l.AuthFailuresPerSecond, l.AuthFailureBurst, timeNow())
	}
}

// throttled reports whether the gate should drop msg from client because
// the client failed authentication too often; it counts what it drops.
func (r *Relay) throttled(msg []byte, client net.Addr) bool {
	_, ap, ok := addrPort(client)
	if !ok || !r.throttle.blocked(ap.Addr(), timeNow()) || !hasIntegrity(msg) {
		return false
	}
	r.metrics.authThrottled.Inc()
	r.rlog.info("auth-throttled", "requests dropped: too many failed authentications", "client", ap.Addr().String())
	return true
}

// hasIntegrity reports whether a STUN message carries MESSAGE-INTEGRITY
// (or its SHA-256 variant).
func hasIntegrity(msg []byte) bool {
	_, sha1 := attributeOffset(msg, stun.AttrMessageIntegrity)
	_, sha256 := attributeOffset(msg, stun.AttrMessageIntegritySHA256)
	return sha1 || sha256
}
