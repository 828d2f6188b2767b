package render

import (
	"encoding/json"
	"fmt"
	"path"
	"time"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// Where the relay container finds its files. The ConfigMap and Secrets are
// mounted as whole volumes, never with subPath, so updates reach the relay.
const (
	configMountPath      = "/etc/turnpike/config"
	credentialsMountPath = "/etc/turnpike/credentials"
	tlsMountRoot         = "/etc/turnpike/tls"
	// nodeMountPath holds the pod's turnpike.dev/node-addresses annotation
	// as nodeAddressesFile (downward API), in the volume nodeVolumeName.
	nodeMountPath     = "/etc/turnpike/node"
	nodeAddressesFile = "addresses.json"
	nodeVolumeName    = "node"
)

// renderRelayConfig turns a TurnServer into the relay's relay.yaml. It
// names no node: each relay reads its own node's addresses from its pod's
// annotation (nodeAddressesAnnotation), so relay.yaml does not grow with the
// cluster and one node's change is not a write every kubelet syncs.
//
// legacyNodes, when not nil, is for relays of an earlier release that may
// still run (see olderRelaysMayRun): relay.yaml then lists every node's
// addresses, as those relays expect, and does not name the node file, which
// they would refuse.
func renderRelayConfig(ts *turnpikev1.TurnServer, legacyNodes map[string]NodeAddresses) *config.Relay {
	spec := &ts.Spec
	cfg := &config.Relay{
		Version:               config.Version,
		Realm:                 spec.Realm,
		UDPSocketsPerListener: int(spec.Relay.Threads),
		RelayPortRange:        config.PortRange{Min: int(spec.RelayPortRange.Min), Max: int(spec.RelayPortRange.Max)},
		TCPRelay:              spec.TCPRelay,
		PeerPolicy: config.PeerPolicy{
			Allow:        cidrStrings(spec.PeerPolicy.Allow),
			Deny:         cidrStrings(spec.PeerPolicy.Deny),
			ClusterCIDRs: cidrStrings(spec.PeerPolicy.ClusterCIDRs),
		},
		Quotas: config.Quotas{
			AllocationsPerUser:       int(spec.Quotas.AllocationsPerUser),
			AllocationsTotal:         int(spec.Quotas.AllocationsTotal),
			PermissionsPerAllocation: int(spec.Quotas.PermissionsPerAllocation),
			ChannelsPerAllocation:    int(spec.Quotas.ChannelsPerAllocation),
		},
		Internal:         config.Internal{MetricsPort: int(spec.MetricsPort), HealthPort: int(spec.HealthPort)},
		DrainGracePeriod: config.Duration{Duration: drainGracePeriod(ts)},
		Log:              config.Log{Level: string(spec.Relay.LogLevel), Format: "json"},
	}
	// Only when on: interfaces left in a disabled fastPath must not change
	// relay.yaml's socket hash and so restart the relays for nothing. The
	// mode and the agent's socket are the relay's flags (fastPathArgs), not
	// relay.yaml fields: relays of an earlier release, which read the same
	// ConfigMap until they are replaced, would refuse unknown fields.
	if fp := spec.Relay.FastPath; fp.EffectiveMode() != turnpikev1.FastPathDisabled {
		cfg.FastPath = config.FastPath{Interfaces: append([]string(nil), fp.Interfaces...)}
	}
	if q := spec.Quotas.BandwidthPerAllocation; q != nil {
		cfg.Quotas.BandwidthPerAllocation = q.Value()
	}
	for _, l := range spec.Listeners {
		cl := config.Listener{Name: l.Name, Protocol: config.Protocol(l.Protocol), Port: int(l.Port)}
		if l.TLSSecretRef != nil {
			dir := path.Join(tlsMountRoot, l.Name)
			cl.CertFile, cl.KeyFile = path.Join(dir, "tls.crt"), path.Join(dir, "tls.key")
		}
		cfg.Listeners = append(cfg.Listeners, cl)
	}
	// Written only when off, so the default relay.yaml stays as it was.
	if spec.ClassicSTUN != nil && !*spec.ClassicSTUN {
		off := false
		cfg.STUN.Classic = &off
	}
	if bd := spec.BehaviorDiscovery; bd != nil {
		cfg.STUN.BehaviorDiscovery = &config.BehaviorDiscovery{AlternatePort: int(bd.AlternatePort)}
		for _, a := range bd.AlternateAddresses {
			cfg.STUN.BehaviorDiscovery.AlternateAddresses = append(cfg.STUN.BehaviorDiscovery.AlternateAddresses, string(a))
		}
	}
	if spec.STUN != nil {
		cfg.Addresses.STUN = &config.STUNDiscovery{Servers: append([]string(nil), spec.STUN.Servers...)}
	}
	if legacyNodes == nil {
		cfg.Addresses.NodeFile = path.Join(nodeMountPath, nodeAddressesFile)
		return cfg
	}
	cfg.Addresses.Nodes = map[string]config.NodeAddresses{}
	for name, a := range legacyNodes {
		cfg.Addresses.Nodes[name] = nodeEntry(a)
	}
	return cfg
}

// nodeEntry is a node's addresses as the relay reads them.
func nodeEntry(a NodeAddresses) config.NodeAddresses {
	na := config.NodeAddresses{Source: string(a.Source)}
	for _, ip := range a.Addresses {
		na.External = append(na.External, ip.String())
	}
	return na
}

// nodeAddressesAnnotation is a relay pod's turnpike.dev/node-addresses: its
// node's entry (addresses.nodeFile), JSON of a config.NodeAddresses.
func nodeAddressesAnnotation(a NodeAddresses) string {
	na := nodeEntry(a)
	b, err := json.Marshal(na)
	if err != nil {
		panic(fmt.Sprintf("encoding %+v: %v", na, err)) // strings only: cannot fail
	}
	return string(b)
}

// drainGracePeriod is the TurnServer's drain period, 30s when unset (the API
// server defaults it; objects built in memory may not have it).
func drainGracePeriod(ts *turnpikev1.TurnServer) time.Duration {
	if d := ts.Spec.Relay.DrainGracePeriod; d != nil {
		return d.Duration
	}
	return 30 * time.Second
}

func cidrStrings(in []turnpikev1.CIDR) []string {
	var out []string
	for _, c := range in {
		out = append(out, string(c))
	}
	return out
}
