package controllers

import (
	"context"

	"github.com/turnpike-dev/turnpike/controllers/render"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// observeRelayNodes lists the nodes ts places relays on, with the addresses
// the operator resolves for them and whether they serve. Addresses that only
// the relays know (STUN) are missing.
func observeRelayNodes(ctx context.Context, c client.Reader, ts *turnpikev1.TurnServer) ([]render.RelayNode, error) {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil { // read only
		return nil, err
	}
	pods, err := relayPods(ctx, c, ts)
	if err != nil {
		return nil, err
	}
	obs := &render.Observation{Nodes: render.SelectedNodes(ts, nodes.Items), Addresses: map[string]render.NodeAddresses{}, ReadyPods: render.ReadyNodes(pods)}
	for _, n := range obs.Nodes {
		obs.Addresses[n.Name] = render.ResolveNodeAddresses(ts, n)
	}
	return render.RelayNodes(obs, false), nil
}
