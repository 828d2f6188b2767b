package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// relayLoads reads how many allocations every ready relay holds, from its
// /status, for the issuing endpoint to send new clients to the less loaded
// of their nodes (render.URIsNear). Every replica that serves the endpoint
// reads them itself (the endpoint is not only the leader's), every
// interval, relayStatusWorkers at a time, outside of any request: a request
// only looks up the last round. At 10,000 nodes and the default interval
// that is about 170 small GETs a second per replica, on the relays' health
// port, which Prometheus scrapes as well.
type relayLoads struct {
	cached   cachedObjects
	fetch    RelayStatusFunc
	interval time.Duration

	mu    sync.Mutex
	loads map[types.NamespacedName]map[string]int // by TurnServer, then node
}

func newRelayLoads(c cachedObjects, fetch RelayStatusFunc, interval time.Duration) *relayLoads {
	if fetch == nil {
		fetch = HTTPRelayStatus
	}
	return &relayLoads{cached: c, fetch: fetch, interval: interval, loads: map[types.NamespacedName]map[string]int{}}
}

// of is the allocations of TurnServer ts's relays by node, as last read;
// nil before the first round, so the choice is then by rank alone.
func (l *relayLoads) of(ts types.NamespacedName) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loads[ts]
}

// NeedLeaderElection: every replica serves the issuing endpoint.
func (l *relayLoads) NeedLeaderElection() bool { return false }

// Start reads the loads every interval until ctx ends.
func (l *relayLoads) Start(ctx context.Context) error {
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	for {
		if err := l.readAll(ctx); err != nil {
			log.FromContext(ctx).Error(err, "listing relays to read their load")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// readAll reads the /status of every ready relay of every TurnServer and
// replaces what was known. A relay that cannot be read counts as idle.
func (l *relayLoads) readAll(ctx context.Context) error {
	var servers turnpikev1.TurnServerList
	if err := l.cached.reader.List(ctx, &servers); err != nil {
		return err
	}
	nodes, err := l.cached.nodes(ctx)
	if err != nil {
		return err
	}
	byName := make(map[string]*corev1.Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	var targets []relayTarget
	for i := range servers.Items {
		ts := &servers.Items[i]
		pods, err := l.cached.relayPods(ctx, ts)
		if err != nil {
			return err
		}
		for node := range render.ReadyNodes(pods) {
			if n, ok := byName[node]; ok {
				if host, ok := internalAddress(n); ok {
					targets = append(targets, relayTarget{types.NamespacedName{Namespace: ts.Namespace, Name: ts.Name}, node, host, ts.Spec.HealthPort})
				}
			}
		}
	}
	loads := map[types.NamespacedName]map[string]int{}
	var mu sync.Mutex
	forEach(targets, relayStatusWorkers, func(t relayTarget) {
		st, err := l.fetch(ctx, t.host, t.port)
		if err != nil {
			log.FromContext(ctx).V(1).Info("relay /status not read", "node", t.node, "error", err.Error())
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if loads[t.ts] == nil {
			loads[t.ts] = map[string]int{}
		}
		loads[t.ts][t.node] = st.Allocations
	})
	l.mu.Lock()
	l.loads = loads
	l.mu.Unlock()
	return nil
}
