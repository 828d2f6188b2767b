package controllers

import (
	"context"

	"github.com/turnpike-dev/turnpike/controllers/render"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// observeRelayNodes lists the nodes ts places relays on, with the addresses
// the operator resolves for them and whether they serve. Addresses that only
// the relays know (STUN) are missing.
func observeRelayNodes(ctx context.Context, c cachedObjects, ts *turnpikev1.TurnServer) ([]render.RelayNode, error) {
	nodes, err := c.nodes(ctx)
	if err != nil {
		return nil, err
	}
	pods, err := c.relayPods(ctx, ts)
	if err != nil {
		return nil, err
	}
	obs := &render.Observation{Nodes: render.SelectedNodes(ts, nodes), Addresses: map[string]render.NodeAddresses{}, ReadyPods: render.ReadyNodes(pods)}
	for _, n := range obs.Nodes {
		obs.Addresses[n.Name] = render.ResolveNodeAddresses(ts, n)
	}
	return render.RelayNodes(obs, false), nil
}
