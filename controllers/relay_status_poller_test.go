package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// TestRelayStatusPoller reads 40 relays through a stand-in for their
// /status (a pure unit test; TestSTUNDiscoveredAddressIsPublished reads a
// real HTTP /status): never more than relayStatusWorkers at once, an event
// for each TurnServer whose relays found something new (an address, the
// fast path turning off), and relays no reconcile wants any more are
// forgotten.
func TestRelayStatusPoller(t *testing.T) {
	var mu sync.Mutex
	answer := map[netip.Addr]string{}
	fastPathReason := map[netip.Addr]string{} // "" while active
	var inFlight, most atomic.Int64
	fetch := func(_ context.Context, host netip.Addr, _ int32) (*config.Status, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for old := most.Load(); n > old && !most.CompareAndSwap(old, n); old = most.Load() {
		}
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if answer[host] == "" {
			return nil, fmt.Errorf("unreachable")
		}
		why := fastPathReason[host]
		return &config.Status{STUN: &config.STUNStatus{Discovered: []config.DiscoveredAddress{{Address: answer[host]}}},
			FastPath: &config.FastPathStatus{Mode: "Auto", Active: why == "", Reason: why}}, nil
	}
	p := newRelayStatusPoller(fetch, time.Hour)
	tsA, tsB := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	var targetsA, targetsB []relayTarget // a's relays found an address; b's cannot be reached
	for i := range 20 {
		hostA, hostB := netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), netip.AddrFrom4([4]byte{10, 2, 0, byte(i)})
		targetsA = append(targetsA, relayTarget{tsA, fmt.Sprintf("a-%d", i), hostA, 9642})
		targetsB = append(targetsB, relayTarget{tsB, fmt.Sprintf("b-%d", i), hostB, 9642})
		answer[hostA] = fmt.Sprintf("203.0.113.%d", i)
	}
	if found := lookupAll(p, tsA, targetsA); len(found) != 0 {
		t.Fatalf("found %v before any poll", found)
	}
	lookupAll(p, tsB, targetsB)
	p.pollOnce(context.Background())

	if n := most.Load(); n > relayStatusWorkers || n < 2 {
		t.Errorf("%d reads at once, want 2 to %d", n, relayStatusWorkers)
	}
	found := lookupAll(p, tsA, targetsA)
	if len(found) != 20 || found["a-7"].addrs()[0] != netip.MustParseAddr("203.0.113.7") {
		t.Errorf("found %v", found)
	}
	events := map[string]int{}
	for len(p.events) > 0 {
		events[(<-p.events).Object.GetName()]++
	}
	if events["a"] == 0 || events["b"] == 0 {
		t.Errorf("events %v, want both TurnServers reconciled once their relays were first read", events)
	}

	// Nothing new: no event. One relay rediscovers: an event for its TurnServer.
	p.pollOnce(context.Background())
	if len(p.events) != 0 {
		t.Errorf("%d events for relays that found nothing new", len(p.events))
	}
	mu.Lock()
	answer[targetsA[3].host] = "203.0.113.200"
	mu.Unlock()
	p.pollOnce(context.Background())
	if len(p.events) == 0 || (<-p.events).Object.GetName() != "a" {
		t.Error("no event for a relay's new address")
	}

	// A relay's fast path falls back to userspace: an event, once.
	mu.Lock()
	fastPathReason[targetsA[5].host] = "fast-path agent connection lost"
	mu.Unlock()
	p.pollOnce(context.Background())
	if len(p.events) != 1 || (<-p.events).Object.GetName() != "a" {
		t.Error("no single event for a relay whose fast path turned off")
	}
	if r := lookupAll(p, tsA, targetsA)["a-5"]; !r.reported || r.fastPath.Active || r.fastPath.Reason != "fast-path agent connection lost" {
		t.Errorf("a-5 found %+v", r)
	}
	p.pollOnce(context.Background())
	if len(p.events) != 0 {
		t.Errorf("%d events for a fast path still off", len(p.events))
	}

	// TurnServer b stops relying on STUN: its relays are no longer read.
	lookupAll(p, tsB, nil)
	if n := len(p.found); n != 20 {
		t.Errorf("%d relays remembered, want a's 20", n)
	}

	// As many relays as before, but one of them another: the one left out
	// is forgotten, the new one is read at the next poll.
	moved := append([]relayTarget{{tsA, "a-new", netip.MustParseAddr("10.1.1.1"), 9642}}, targetsA[1:]...)
	mu.Lock()
	answer[moved[0].host] = "203.0.113.99"
	mu.Unlock()
	if found := lookupAll(p, tsA, moved); len(found) != 19 {
		t.Errorf("found %d relays of the new set before it was polled, want 19", len(found))
	}
	if _, ok := p.found[targetsA[0]]; ok {
		t.Error("a-0, no longer wanted, is still remembered")
	}
	p.pollOnce(context.Background())
	if found := lookupAll(p, tsA, moved); len(found) != 20 || found["a-new"].addrs()[0] != netip.MustParseAddr("203.0.113.99") {
		t.Errorf("after a poll found %v, want a-new's address among 20", found["a-new"])
	}
}

// lookupAll is lookup's findings as a map by node.
func lookupAll(p *relayStatusPoller, ts types.NamespacedName, targets []relayTarget) map[string]relayReport {
	out := map[string]relayReport{}
	p.lookup(ts, targets, func(node string, r relayReport) { out[node] = r })
	return out
}
