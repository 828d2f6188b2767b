package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stream connections (TCP and TLS) cost the relay a file descriptor, a
// goroutine and a read buffer each before the client has proven anything.
// connLimiter bounds them per client address and in total; clientListener
// applies it in its accept loop, which also outlives transient accept
// errors (EMFILE above all), because pion stops serving a listener for good
// the first time Accept returns an error.

// Reasons a connection is refused or closed; the "reason" label of
// turnpike_relay_connections_refused_total and _closed_total.
const (
	connPerSource    = "per_source"    // refused: the client address holds its quota
	connTotal        = "total"         // refused: the relay holds its total quota
	connAcceptError  = "accept_error"  // accept failed (EMFILE and friends); retried
	connFirstTimeout = "first_timeout" // closed: no whole first message in time
	connIdle         = "idle"          // closed: no message for the idle timeout, and no allocation
	connBadFrame     = "bad_frame"     // closed: an invalid frame
	connHandshake    = "tls_handshake" // closed: the TLS handshake failed or timed out
)

var connRefuseReasons = []string{connPerSource, connTotal, connAcceptError}
var connCloseReasons = []string{connFirstTimeout, connIdle, connBadFrame, connHandshake}

// connLimiter counts open stream connections per client address.
type connLimiter struct {
	mu        sync.Mutex
	perSource map[netip.Addr]int
	total     int
}

func newConnLimiter() *connLimiter { return &connLimiter{perSource: map[netip.Addr]int{}} }

// acquire takes a slot for a connection from src, or says which limit is
// full. A limit of 0 is no limit.
func (l *connLimiter) acquire(src netip.Addr, perSource, total int) (reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case total > 0 && l.total >= total:
		return connTotal
	case perSource > 0 && l.perSource[src] >= perSource:
		return connPerSource
	}
	l.perSource[src]++
	l.total++
	return ""
}

func (l *connLimiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perSource[src]--; l.perSource[src] <= 0 {
		delete(l.perSource, src)
	}
	l.total--
}

func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// defaultConnectionLimit is half the soft file descriptor limit: the other
// half stays for relay sockets, listeners and the metrics server.
func defaultConnectionLimit() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return int(lim.Cur / 2)
}

// acceptBackoff is how long the accept loop waits after a failed accept,
// doubling from acceptBackoffMin to acceptBackoffMax (as net/http does).
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// retryableAcceptError reports whether an accept error is worth retrying:
// everything but a closed listener. EMFILE, ENFILE, ENOBUFS, ENOMEM and
// ECONNABORTED all pass once the moment passes.
func retryableAcceptError(err error) bool {
	return !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EINVAL)
}
