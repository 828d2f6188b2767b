package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Defaults applied by Parse to fields left empty.
const (
	DefaultMetricsPort      = 9641
	DefaultHealthPort       = 9642
	DefaultRelayPortMin     = 49152
	DefaultRelayPortMax     = 65535
	DefaultDrainGracePeriod = "30s"

	DefaultConnectionsPerSource  = 64
	DefaultFirstMessageTimeout   = 10 * time.Second
	DefaultIdleTimeout           = 60 * time.Second
	DefaultAuthFailuresPerSecond = 5
	DefaultAuthFailureBurst      = 20
)

// ParseRelay decodes and validates relay.yaml. Unknown fields are errors, so
// a typo is reported instead of silently ignored.
func ParseRelay(data []byte) (*Relay, error) {
	var r Relay
	if err := yaml.UnmarshalStrict(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", RelayFile, err)
	}
	r.setDefaults()
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", RelayFile, err)
	}
	return &r, nil
}

// ParseCredentials decodes and validates credentials.yaml.
func ParseCredentials(data []byte) (*Credentials, error) {
	var c Credentials
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", CredentialsFile, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", CredentialsFile, err)
	}
	return &c, nil
}

// Files is the content of relay.yaml and credentials.yaml as the relay
// reads them, at startup and on every reload. The relay keeps the bytes
// to act only when they change.
type Files struct {
	Relay []byte
	// Credentials is nil without a credentials directory: no users.
	Credentials []byte
}

// ReadFiles reads relay.yaml from relayPath and credentials.yaml from
// credentialsDir, if that is set.
func ReadFiles(relayPath, credentialsDir string) (Files, error) {
	var f Files
	var err error
	if f.Relay, err = os.ReadFile(relayPath); err != nil {
		return Files{}, err
	}
	if credentialsDir != "" {
		if f.Credentials, err = os.ReadFile(filepath.Join(credentialsDir, CredentialsFile)); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// Parse decodes and validates both files. Without credentials.yaml the
// credentials are empty.
func (f Files) Parse() (*Relay, *Credentials, error) {
	relay, err := ParseRelay(f.Relay)
	if err != nil {
		return nil, nil, err
	}
	creds := &Credentials{Version: Version}
	if f.Credentials != nil {
		if creds, err = ParseCredentials(f.Credentials); err != nil {
			return nil, nil, err
		}
	}
	return relay, creds, nil
}

// Equal reports whether both files have the same content as g's.
func (f Files) Equal(g Files) bool {
	return bytes.Equal(f.Relay, g.Relay) && bytes.Equal(f.Credentials, g.Credentials)
}

// Marshal renders a config file (relay.yaml or credentials.yaml).
func Marshal(v any) ([]byte, error) { return yaml.Marshal(v) }

// ParseNodeAddresses reads a node file (see Addresses.NodeFile): JSON of a
// NodeAddresses, or nothing at all, which is no entry (nil).
func ParseNodeAddresses(data []byte) (*NodeAddresses, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	n := &NodeAddresses{}
	if err := yaml.UnmarshalStrict(data, n); err != nil {
		return nil, err
	}
	errs := fieldErrors{}
	validateAddrs(&errs, "external", n.External)
	return n, errs.err()
}

func (r *Relay) setDefaults() {
	if r.RelayPortRange == (PortRange{}) {
		r.RelayPortRange = PortRange{Min: DefaultRelayPortMin, Max: DefaultRelayPortMax}
	}
	if r.Internal.MetricsPort == 0 {
		r.Internal.MetricsPort = DefaultMetricsPort
	}
	if r.Internal.HealthPort == 0 {
		r.Internal.HealthPort = DefaultHealthPort
	}
	if r.DrainGracePeriod.Duration == 0 {
		_ = r.DrainGracePeriod.UnmarshalJSON([]byte(`"` + DefaultDrainGracePeriod + `"`))
	}
	l := &r.Limits
	if l.ConnectionsPerSource == 0 {
		l.ConnectionsPerSource = DefaultConnectionsPerSource
	}
	if l.FirstMessageTimeout.Duration == 0 {
		l.FirstMessageTimeout.Duration = DefaultFirstMessageTimeout
	}
	if l.IdleTimeout.Duration == 0 {
		l.IdleTimeout.Duration = DefaultIdleTimeout
	}
	if l.AuthFailuresPerSecond == 0 {
		l.AuthFailuresPerSecond = DefaultAuthFailuresPerSecond
	}
	if l.AuthFailureBurst == 0 {
		l.AuthFailureBurst = DefaultAuthFailureBurst
	}
	if r.Log.Level == "" {
		r.Log.Level = "info"
	}
	if r.Log.Format == "" {
		r.Log.Format = "json"
	}
}

// fieldErrors collects validation errors, each naming its field.
type fieldErrors []error

func (e *fieldErrors) add(field, format string, args ...any) {
	*e = append(*e, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

func (e fieldErrors) err() error { return errors.Join(e...) }

// Validate checks relay.yaml; every error names the field it is about.
func (r *Relay) Validate() error {
	var errs fieldErrors
	if r.Version != Version {
		errs.add("version", "must be %q, got %q", Version, r.Version)
	}
	if strings.TrimSpace(r.Realm) == "" {
		errs.add("realm", "must not be empty")
	}
	if len(r.Listeners) == 0 {
		errs.add("listeners", "at least one listener is required")
	}
	names := map[string]bool{}
	ports := map[string]bool{}
	for i, l := range r.Listeners {
		f := fmt.Sprintf("listeners[%d]", i)
		if l.Name == "" {
			errs.add(f+".name", "must not be empty")
		} else if names[l.Name] {
			errs.add(f+".name", "duplicate listener name %q", l.Name)
		}
		names[l.Name] = true
		switch l.Protocol {
		case UDP, TCP:
		case TLS, DTLS:
			if l.CertFile == "" || l.KeyFile == "" {
				errs.add(f, "%s needs certFile and keyFile", l.Protocol)
			}
		default:
			errs.add(f+".protocol", "must be UDP, TCP, TLS or DTLS, got %q", l.Protocol)
		}
		if !validPort(l.Port) {
			errs.add(f+".port", "must be 1-65535, got %d", l.Port)
		}
		key := fmt.Sprintf("%s/%d", l.Protocol.Transport(), l.Port)
		if ports[key] {
			errs.add(f+".port", "another listener already uses %s port %d", l.Protocol.Transport(), l.Port)
		}
		ports[key] = true
		if l.Port >= r.RelayPortRange.Min && l.Port <= r.RelayPortRange.Max {
			errs.add(f+".port", "%d is inside relayPortRange %d-%d", l.Port, r.RelayPortRange.Min, r.RelayPortRange.Max)
		}
	}
	if r.UDPSocketsPerListener < 0 {
		errs.add("udpSocketsPerListener", "must not be negative")
	}
	pr := r.RelayPortRange
	if !validPort(pr.Min) || !validPort(pr.Max) || pr.Min > pr.Max {
		errs.add("relayPortRange", "must satisfy 1 <= min <= max <= 65535, got %d-%d", pr.Min, pr.Max)
	}
	validateAddrs(&errs, "addresses.bind", r.Addresses.Bind)
	validateAddrs(&errs, "addresses.external", r.Addresses.External)
	for node, a := range r.Addresses.Nodes {
		validateAddrs(&errs, fmt.Sprintf("addresses.nodes[%s].external", node), a.External)
	}
	if s := r.Addresses.STUN; s != nil {
		if len(s.Servers) == 0 {
			errs.add("addresses.stun.servers", "at least one STUN server is required when stun is set")
		}
		// Zero means the default; anything shorter than a second would
		// flood the STUN servers.
		if d := s.Interval.Duration; d != 0 && d < time.Second {
			errs.add("addresses.stun.interval", "must be at least 1s (or unset for 60s), got %s", d)
		}
	}
	r.validateBehaviorDiscovery(&errs)
	validatePrefixes(&errs, "peerPolicy.allow", r.PeerPolicy.Allow)
	validatePrefixes(&errs, "peerPolicy.deny", r.PeerPolicy.Deny)
	validatePrefixes(&errs, "peerPolicy.clusterCIDRs", r.PeerPolicy.ClusterCIDRs)
	q := r.Quotas
	if q.AllocationsPerUser < 0 || q.AllocationsTotal < 0 || q.BandwidthPerAllocation < 0 ||
		q.PermissionsPerAllocation < 0 || q.ChannelsPerAllocation < 0 {
		errs.add("quotas", "limits must not be negative (0 means unlimited)")
	}
	l := r.Limits
	if l.ConnectionsPerSource < 0 || l.Connections < 0 || l.AuthFailuresPerSecond < 0 || l.AuthFailureBurst < 0 {
		errs.add("limits", "must not be negative (0 means the default)")
	}
	if d := l.FirstMessageTimeout.Duration; d < 0 || d > time.Hour {
		errs.add("limits.firstMessageTimeout", "must be between 0 (the default, 10s) and 1h, got %s", d)
	}
	if d := l.IdleTimeout.Duration; d < 0 || d > 24*time.Hour {
		errs.add("limits.idleTimeout", "must be between 0 (the default, 60s) and 24h, got %s", d)
	}
	switch r.FastPath.Mode {
	case "", FastPathAuto, FastPathEnabled, FastPathDisabled:
	default:
		errs.add("fastPath.mode", "must be Auto, Enabled or Disabled, got %q", r.FastPath.Mode)
	}
	if r.FastPath.Enabled && r.FastPath.Mode != "" && r.FastPath.Mode != FastPathEnabled {
		errs.add("fastPath.enabled", "true contradicts mode %s (enabled is the older spelling of mode: Enabled)", r.FastPath.Mode)
	}
	for i, name := range r.FastPath.Interfaces {
		if !validInterfaceName(name) {
			errs.add(fmt.Sprintf("fastPath.interfaces[%d]", i), "%q is not an interface name (1-15 characters, no '/' or whitespace)", name)
		}
	}
	if r.Internal.Address != "" {
		if _, err := netip.ParseAddr(r.Internal.Address); err != nil {
			errs.add("internal.address", "%v", err)
		}
	}
	if !validPort(r.Internal.MetricsPort) {
		errs.add("internal.metricsPort", "must be 1-65535, got %d", r.Internal.MetricsPort)
	}
	if !validPort(r.Internal.HealthPort) {
		errs.add("internal.healthPort", "must be 1-65535, got %d", r.Internal.HealthPort)
	}
	if r.DrainGracePeriod.Duration < 0 {
		errs.add("drainGracePeriod", "must not be negative")
	}
	switch r.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs.add("log.level", "must be debug, info, warn or error, got %q", r.Log.Level)
	}
	switch r.Log.Format {
	case "json", "text":
	default:
		errs.add("log.format", "must be json or text, got %q", r.Log.Format)
	}
	return errs.err()
}

// validateBehaviorDiscovery checks stun.behaviorDiscovery: its port must
// be free of every UDP listener and of the relay port range, and it needs a
// UDP listener to be the primary.
func (r *Relay) validateBehaviorDiscovery(errs *fieldErrors) {
	bd := r.STUN.BehaviorDiscovery
	if bd == nil {
		return
	}
	const f = "stun.behaviorDiscovery"
	if _, ok := r.BehaviorDiscoveryListener(); !ok {
		errs.add(f, "needs a UDP listener: behaviour discovery runs over UDP")
	}
	p := bd.AlternatePort
	switch {
	case !validPort(p):
		errs.add(f+".alternatePort", "must be 1-65535, got %d", p)
	case p >= r.RelayPortRange.Min && p <= r.RelayPortRange.Max:
		errs.add(f+".alternatePort", "%d is inside relayPortRange %d-%d", p, r.RelayPortRange.Min, r.RelayPortRange.Max)
	}
	for _, l := range r.Listeners {
		if l.Protocol.Transport() == "udp" && l.Port == p {
			errs.add(f+".alternatePort", "listener %s already uses UDP port %d", l.Name, p)
		}
	}
	validateAddrs(errs, f+".alternateAddresses", bd.AlternateAddresses)
	for i, s := range bd.AlternateAddresses {
		if a, err := netip.ParseAddr(s); err == nil && (a.IsUnspecified() || a.IsMulticast()) {
			errs.add(fmt.Sprintf("%s.alternateAddresses[%d]", f, i), "%s is not a unicast address", s)
		}
	}
}

// BehaviorDiscoveryListener is the listener behaviour discovery answers
// on: the first UDP listener.
func (r *Relay) BehaviorDiscoveryListener() (Listener, bool) {
	for _, l := range r.Listeners {
		if l.Protocol == UDP {
			return l, true
		}
	}
	return Listener{}, false
}

// Validate checks credentials.yaml.
func (c *Credentials) Validate() error {
	var errs fieldErrors
	if c.Version != Version {
		errs.add("version", "must be %q, got %q", Version, c.Version)
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		f := fmt.Sprintf("users[%d]", i)
		if u.Username == "" {
			errs.add(f+".username", "must not be empty")
		}
		if seen[u.Username+"/"+strings.ToLower(u.Key)] {
			errs.add(f, "user %q has the same key twice", u.Username)
		}
		seen[u.Username+"/"+strings.ToLower(u.Key)] = true
		if len(u.Key) != 32 || strings.Trim(strings.ToLower(u.Key), "0123456789abcdef") != "" {
			errs.add(f+".key", "must be the 32 hex digits of MD5(username:realm:password)")
		}
	}
	for i, s := range c.SharedSecrets {
		f := fmt.Sprintf("sharedSecrets[%d]", i)
		if len(s.Secret) < 16 {
			errs.add(f+".secret", "must be at least 16 characters")
		}
		if s.NotBefore != nil && s.NotAfter != nil && !s.NotAfter.After(*s.NotBefore) {
			errs.add(f+".notAfter", "must be after notBefore")
		}
	}
	return errs.err()
}

// Transport is the IP transport a listener binds: DTLS rides on UDP, TLS on TCP.
func (p Protocol) Transport() string {
	if p == UDP || p == DTLS {
		return "udp"
	}
	return "tcp"
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }

func validateAddrs(errs *fieldErrors, field string, addrs []string) {
	for i, a := range addrs {
		if _, err := netip.ParseAddr(a); err != nil {
			errs.add(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
}

func validatePrefixes(errs *fieldErrors, field string, prefixes []string) {
	for i, p := range prefixes {
		if _, err := netip.ParsePrefix(p); err != nil {
			errs.add(fmt.Sprintf("%s[%d]", field, i), "not a CIDR: %v", err)
		}
	}
}

// validInterfaceName follows the kernel's dev_valid_name: 1-15 bytes, not
// "." or "..", no '/', ':' or whitespace.
func validInterfaceName(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	return !strings.ContainsAny(name, "/: \t\n\r\v\f")
}
