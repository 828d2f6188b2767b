package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay"
)

// RelayStatusFunc reads a relay's /status from its internal listener at
// host:port. The relay holds no Kubernetes credentials, so asking it is the
// only way the operator learns an address the relay discovered with STUN.
type RelayStatusFunc func(ctx context.Context, host netip.Addr, port int32) (*relay.Status, error)

// relayStatusTimeout keeps an unreachable relay from holding up a reconcile.
const relayStatusTimeout = 2 * time.Second

// stunRefreshInterval is how often a TurnServer with STUN nodes is
// reconciled to pick up addresses its relays rediscover.
const stunRefreshInterval = time.Minute

// HTTPRelayStatus is the RelayStatusFunc used in a cluster: a GET of
// http://host:port/status, the relay's health port on its node.
func HTTPRelayStatus(ctx context.Context, host netip.Addr, port int32) (*relay.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, relayStatusTimeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(host.String(), strconv.Itoa(int(port))) + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	st := &relay.Status{}
	return st, json.NewDecoder(resp.Body).Decode(st)
}

// discoverSTUNAddresses asks the ready relays of nodes that rely on STUN
// which addresses they discovered, and publishes those. A relay that cannot
// be asked, or found nothing yet, leaves its node without a published address.
func (r *TurnServerReconciler) discoverSTUNAddresses(ctx context.Context, ts *turnpikev1.TurnServer, obs *observation) {
	fetch := r.RelayStatus
	if fetch == nil {
		fetch = HTTPRelayStatus
	}
	for _, n := range obs.nodes {
		a := obs.addresses[n.Name]
		if a.source != turnpikev1.AddressFromSTUN || !obs.readyPods[n.Name] {
			continue
		}
		obs.stunNodes = true
		host, ok := internalAddress(n)
		if !ok {
			continue
		}
		st, err := fetch(ctx, host, ts.Spec.HealthPort)
		if err != nil || st.STUN == nil {
			continue
		}
		var found []string
		for _, d := range st.STUN.Discovered {
			found = append(found, d.Address)
		}
		if addrs := onePerFamily(found); len(addrs) > 0 {
			obs.addresses[n.Name] = nodeAddresses{addrs, turnpikev1.AddressFromSTUN, true}
		}
	}
}

// internalAddress is the node address its relay's internal listener binds
// (HOST_IP, the node's first InternalIP).
func internalAddress(n *corev1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}
