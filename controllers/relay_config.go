package controllers

import (
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
)

// renderRelayConfig turns a TurnServer and the addresses resolved for its
// nodes into the relay's relay.yaml.
func renderRelayConfig(ts *turnpikev1.TurnServer, nodes map[string]nodeAddresses) *config.Relay {
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
	// Only when enabled: interfaces left in a disabled fastPath must not
	// change relay.yaml's socket hash and so restart the relays for nothing.
	if fp := spec.Relay.FastPath; fp.Enabled {
		cfg.FastPath = config.FastPath{Enabled: true, Interfaces: append([]string(nil), fp.Interfaces...)}
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
	if spec.STUN != nil {
		cfg.Addresses.STUN = &config.STUNDiscovery{Servers: append([]string(nil), spec.STUN.Servers...)}
	}
	if len(nodes) > 0 {
		cfg.Addresses.Nodes = map[string]config.NodeAddresses{}
		for name, a := range nodes {
			na := config.NodeAddresses{Source: string(a.source)}
			for _, ip := range a.addresses {
				na.External = append(na.External, ip.String())
			}
			cfg.Addresses.Nodes[name] = na
		}
	}
	return cfg
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
