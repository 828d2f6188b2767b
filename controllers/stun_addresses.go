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

	"github.com/turnpike-dev/turnpike/controllers/render"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// RelayStatusFunc reads a relay's /status from its internal listener at
// host:port. The relay holds no Kubernetes credentials, so asking it is the
// only way the operator learns an address the relay discovered with STUN,
// or that its fast path fell back to userspace.
type RelayStatusFunc func(ctx context.Context, host netip.Addr, port int32) (*config.Status, error)

// relayStatusTimeout keeps an unreachable relay from holding up a reconcile.
const relayStatusTimeout = 2 * time.Second

// DefaultRelayStatusInterval is how often the ready relays are asked what
// they discovered with STUN and whether their fast path is active.
const DefaultRelayStatusInterval = time.Minute

// HTTPRelayStatus is the RelayStatusFunc used in a cluster: a GET of
// http://host:port/status, the relay's health port on its node.
func HTTPRelayStatus(ctx context.Context, host netip.Addr, port int32) (*config.Status, error) {
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
	st := &config.Status{}
	return st, json.NewDecoder(resp.Body).Decode(st)
}

// readRelayStatus takes what the ready relays' /status said: the addresses
// that relays of nodes relying on STUN discovered, and every relay's fast
// path unless it is Disabled. It reads nothing from the relays itself: it
// tells the poller which relays to read and takes what the poller found so
// far. A relay not read yet, or that found nothing, leaves its node without
// a published address and out of the fast-path counts.
func (r *TurnServerReconciler) readRelayStatus(ts *turnpikev1.TurnServer, obs *render.Observation) {
	fastPathOn := ts.Spec.Relay.FastPath.EffectiveMode() != turnpikev1.FastPathDisabled
	targets := make([]relayTarget, 0, len(obs.ReadyPods))
	for _, n := range obs.Nodes {
		stun := obs.Addresses[n.Name].Source == turnpikev1.AddressFromSTUN
		if !obs.ReadyPods[n.Name] || !stun && !fastPathOn {
			continue
		}
		if host, ok := internalAddress(n); ok {
			targets = append(targets, relayTarget{types.NamespacedName{Namespace: ts.Namespace, Name: ts.Name}, n.Name, host, ts.Spec.HealthPort})
		}
	}
	r.statusPoller.lookup(types.NamespacedName{Namespace: ts.Namespace, Name: ts.Name}, targets, func(node string, report relayReport) {
		if addrs := report.addrs(); len(addrs) > 0 && obs.Addresses[node].Source == turnpikev1.AddressFromSTUN {
			obs.Addresses[node] = render.NodeAddresses{Addresses: addrs, Source: turnpikev1.AddressFromSTUN, Public: true}
		}
		if fastPathOn && report.reported {
			if obs.FastPath == nil {
				obs.FastPath = map[string]render.FastPathReport{}
			}
			obs.FastPath[node] = report.fastPath
		}
	})
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
