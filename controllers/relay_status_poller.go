package controllers

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

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

// relayStatusPoller reads the /status of the relays that discover their
// address with STUN, relayStatusWorkers at a time, every interval and when a
// relay is new, outside of any reconcile: a reconcile only looks up what was
// found, so an unreachable relay (2 s timeout) holds up no reconcile, and
// thousands of them are not read once per reconcile. When a relay finds a
// new address, its TurnServer is reconciled (events).
type relayStatusPoller struct {
	fetch    RelayStatusFunc
	interval time.Duration
	events   chan event.GenericEvent

	mu      sync.Mutex
	targets map[types.NamespacedName][]relayTarget // by TurnServer, as its last reconcile asked
	found   map[relayTarget][]netip.Addr
	kick    chan struct{} // a target is new: poll now
}

func newRelayStatusPoller(fetch RelayStatusFunc, interval time.Duration) *relayStatusPoller {
	if fetch == nil {
		fetch = HTTPRelayStatus
	}
	return &relayStatusPoller{
		fetch: fetch, interval: interval, events: make(chan event.GenericEvent, 64),
		targets: map[types.NamespacedName][]relayTarget{}, found: map[relayTarget][]netip.Addr{},
		kick: make(chan struct{}, 1),
	}
}

// lookup records the relays a TurnServer's reconcile wants read (replacing
// what its last reconcile wanted) and returns what they were found to
// advertise so far, by node. Relays it no longer wants are forgotten.
func (p *relayStatusPoller) lookup(ts types.NamespacedName, targets []relayTarget) map[string][]netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]netip.Addr{}
	newTarget := false
	for _, t := range targets {
		if addrs, ok := p.found[t]; ok {
			out[t.node] = addrs
		} else {
			newTarget = true
		}
	}
	for _, old := range p.targets[ts] {
		if !slices.Contains(targets, old) {
			delete(p.found, old)
		}
	}
	if len(targets) == 0 {
		delete(p.targets, ts)
	} else {
		p.targets[ts] = targets
	}
	if newTarget {
		select {
		case p.kick <- struct{}{}:
		default: // a poll is already due
		}
	}
	return out
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
		all = append(all, ts...)
	}
	p.mu.Unlock()

	readRelays(all, func(t relayTarget) { p.read(ctx, t) })
}

// readRelays calls read for every target, relayStatusWorkers at a time,
// and returns when all are done.
func readRelays(targets []relayTarget, read func(relayTarget)) {
	work := make(chan relayTarget)
	var wg sync.WaitGroup
	for range min(relayStatusWorkers, len(targets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				read(t)
			}
		}()
	}
	for _, t := range targets {
		work <- t
	}
	close(work)
	wg.Wait()
}

// read asks one relay and records what it found; a relay that cannot be
// asked, or found nothing yet, counts as having found nothing.
func (p *relayStatusPoller) read(ctx context.Context, t relayTarget) {
	var addrs []netip.Addr
	st, err := p.fetch(ctx, t.host, t.port)
	if err != nil {
		log.FromContext(ctx).V(1).Info("relay /status not read", "node", t.node, "error", err.Error())
	} else if st.STUN != nil {
		var raw []string
		for _, d := range st.STUN.Discovered {
			raw = append(raw, d.Address)
		}
		addrs = render.OnePerFamily(raw)
	}
	p.mu.Lock()
	old, known := p.found[t]
	wanted := slices.Contains(p.targets[t.ts], t)
	if wanted {
		p.found[t] = addrs
	}
	p.mu.Unlock()
	if wanted && (!known || !slices.Equal(old, addrs)) {
		ts := &turnpikev1.TurnServer{}
		ts.Namespace, ts.Name = t.ts.Namespace, t.ts.Name
		select {
		case p.events <- event.GenericEvent{Object: ts}:
		case <-ctx.Done():
		}
	}
}
