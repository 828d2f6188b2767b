package controllers

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"
	"github.com/turnpike-dev/turnpike/relay/config"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// relayStatusWorkers is how many relays' /status the poller reads at once.
const relayStatusWorkers = 8

// relayTarget is one relay whose /status the operator reads: the relay of
// node for TurnServer ts, at host:port (its node's internal address and
// health port).
type relayTarget struct {
	ts   types.NamespacedName
	node string
	host netip.Addr
	port int32
}

// relayReport is what the operator keeps of one relay's /status: the
// addresses it discovered with STUN (at most one per family) and its fast
// path, if it reported one. It is comparable, so a change is seen.
type relayReport struct {
	stun     [2]netip.Addr // IPv4, IPv6; zero when not found
	fastPath render.FastPathReport
	reported bool // fastPath was in the /status
}

// addrs are the discovered addresses, IPv4 first.
func (r relayReport) addrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range r.stun {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// relayStatusPoller reads the /status of the relays the TurnServers'
// reconciles ask for (those that discover their address with STUN, and
// every ready relay whose fast path is on), relayStatusWorkers at a time,
// every interval and when a relay is new, outside of any reconcile: a
// reconcile only looks up what was found, so an unreachable relay (2 s
// timeout) holds up no reconcile, and thousands of them are not read once
// per reconcile. When a relay's report changes (a new address, the fast
// path turning on or off), its TurnServer is reconciled (events). At 10,000
// relays and the default interval that is about 170 small GETs a second
// from the leader, on the relays' health port.
type relayStatusPoller struct {
	fetch    RelayStatusFunc
	interval time.Duration
	events   chan event.GenericEvent

	mu      sync.Mutex
	targets map[types.NamespacedName]map[relayTarget]bool // by TurnServer, as its last reconcile asked
	found   map[relayTarget]relayReport
	kick    chan struct{} // a target is new: poll now
}

func newRelayStatusPoller(fetch RelayStatusFunc, interval time.Duration) *relayStatusPoller {
	if fetch == nil {
		fetch = HTTPRelayStatus
	}
	return &relayStatusPoller{
		fetch: fetch, interval: interval, events: make(chan event.GenericEvent, 64),
		targets: map[types.NamespacedName]map[relayTarget]bool{}, found: map[relayTarget]relayReport{},
		kick: make(chan struct{}, 1),
	}
}

// lookup records the relays a TurnServer's reconcile wants read (replacing
// what its last reconcile wanted) and calls use with what was found of
// those read so far. Relays it no longer wants are forgotten. A pass at
// 10,000 nodes asks for the same set as the pass before it, so the set is
// rebuilt only when it changed: two maps of every relay per pass were a
// fifth of what the operator allocated.
func (p *relayStatusPoller) lookup(ts types.NamespacedName, targets []relayTarget, use func(node string, r relayReport)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	known := p.targets[ts]
	same := len(known) == len(targets)
	newTarget := false
	for _, t := range targets {
		same = same && known[t]
		if r, ok := p.found[t]; ok {
			use(t.node, r)
		} else {
			newTarget = true
		}
	}
	switch {
	case len(targets) == 0:
		p.forget(known, nil)
		delete(p.targets, ts)
	case !same:
		want := make(map[relayTarget]bool, len(targets))
		for _, t := range targets {
			want[t] = true
		}
		p.forget(known, want)
		p.targets[ts] = want
	}
	if newTarget {
		select {
		case p.kick <- struct{}{}:
		default: // a poll is already due
		}
	}
}

// forget drops what was found of the relays in old that are not in want.
func (p *relayStatusPoller) forget(old, want map[relayTarget]bool) {
	for t := range old {
		if !want[t] {
			delete(p.found, t)
		}
	}
}

// NeedLeaderElection: only the leader reconciles, so only it polls.
func (p *relayStatusPoller) NeedLeaderElection() bool { return true }

// Start polls until ctx ends.
func (p *relayStatusPoller) Start(ctx context.Context) error {
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-p.kick:
		}
		p.pollOnce(ctx)
	}
}

// pollOnce reads every wanted relay's /status, relayStatusWorkers at a time,
// and reconciles the TurnServers whose relays found something new.
func (p *relayStatusPoller) pollOnce(ctx context.Context) {
	p.mu.Lock()
	var all []relayTarget
	for _, ts := range p.targets {
		for t := range ts {
			all = append(all, t)
		}
	}
	p.mu.Unlock()

	forEach(all, relayStatusWorkers, func(t relayTarget) { p.read(ctx, t) })
}

// forEach calls fn for every item, at most workers at a time, and returns
// when all are done.
func forEach[T any](items []T, workers int, fn func(T)) {
	work := make(chan T)
	var wg sync.WaitGroup
	for range min(workers, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				fn(t)
			}
		}()
	}
	for _, t := range items {
		work <- t
	}
	close(work)
	wg.Wait()
}

// read asks one relay and records what it found; a relay that cannot be
// asked counts as having found nothing and reported no fast path.
func (p *relayStatusPoller) read(ctx context.Context, t relayTarget) {
	var r relayReport
	st, err := p.fetch(ctx, t.host, t.port)
	if err != nil {
		log.FromContext(ctx).V(1).Info("relay /status not read", "node", t.node, "error", err.Error())
	} else {
		r = reportOf(st)
	}
	p.mu.Lock()
	old, known := p.found[t]
	wanted := p.targets[t.ts][t]
	if wanted {
		p.found[t] = r
	}
	p.mu.Unlock()
	if wanted && (!known || old != r) {
		ts := &turnpikev1.TurnServer{}
		ts.Namespace, ts.Name = t.ts.Namespace, t.ts.Name
		select {
		case p.events <- event.GenericEvent{Object: ts}:
		case <-ctx.Done():
		}
	}
}

// reportOf keeps what the operator uses of a relay's /status.
func reportOf(st *config.Status) relayReport {
	var r relayReport
	if st.STUN != nil {
		var raw []string
		for _, d := range st.STUN.Discovered {
			raw = append(raw, d.Address)
		}
		for _, a := range render.OnePerFamily(raw) {
			if a.Is4() {
				r.stun[0] = a
			} else {
				r.stun[1] = a
			}
		}
	}
	if fp := st.FastPath; fp != nil {
		r.fastPath, r.reported = render.FastPathReport{Mode: fp.Mode, Active: fp.Active, Reason: fp.Reason}, true
	}
	return r
}
