package config

import (
	"fmt"
	"strings"
	"testing"
)

const validRelay = `version: turnpike.dev/relay/v1
realm: example.org
listeners:
- {name: udp, protocol: UDP, port: 3478}
`

func TestParseRelayDefaults(t *testing.T) {
	r, err := ParseRelay([]byte(validRelay))
	if err != nil {
		t.Fatal(err)
	}
	if r.RelayPortRange != (PortRange{DefaultRelayPortMin, DefaultRelayPortMax}) || r.Internal.MetricsPort != DefaultMetricsPort ||
		r.Internal.HealthPort != DefaultHealthPort || r.DrainGracePeriod.Seconds() != 30 || r.Log.Level != "info" || r.Log.Format != "json" {
		t.Fatalf("defaults not applied: %+v", r)
	}
}

// TestParseRelayErrors checks that every error names the field a person must fix.
func TestParseRelayErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"wrong version", strings.Replace(validRelay, "relay/v1", "relay/v9", 1), `version: must be "turnpike.dev/relay/v1"`},
		{"unknown field", validRelay + "relam: typo\n", `unknown field "relam"`},
		{"empty realm", strings.Replace(validRelay, "realm: example.org", "realm: ' '", 1), "realm: must not be empty"},
		{"no listeners", "version: turnpike.dev/relay/v1\nrealm: r\n", "listeners: at least one listener is required"},
		{"duplicate name", validRelay + "- {name: udp, protocol: TCP, port: 3479}\n", `listeners[1].name: duplicate listener name "udp"`},
		{"DTLS on a UDP port", validRelay + "- {name: d, protocol: DTLS, port: 3478, certFile: c, keyFile: k}\n", "listeners[1].port: another listener already uses udp port 3478"},
		{"TLS without files", validRelay + "- {name: t, protocol: TLS, port: 5349}\n", "listeners[1]: TLS needs certFile and keyFile"},
		{"bad protocol", validRelay + "- {name: s, protocol: SCTP, port: 1}\n", `listeners[1].protocol: must be UDP, TCP, TLS or DTLS, got "SCTP"`},
		{"port out of range", validRelay + "- {name: b, protocol: TCP, port: 70000}\n", "listeners[1].port: must be 1-65535, got 70000"},
		{"listener in relay range", validRelay + "- {name: b, protocol: TCP, port: 50000}\n", "listeners[1].port: 50000 is inside relayPortRange 49152-65535"},
		{"range reversed", validRelay + "relayPortRange: {min: 50000, max: 40000}\n", "relayPortRange: must satisfy 1 <= min <= max <= 65535"},
		{"bad CIDR", validRelay + "peerPolicy: {allow: [10.0.0.0/33]}\n", "peerPolicy.allow[0]: not a CIDR"},
		{"bad node address", validRelay + "addresses: {nodes: {n1: {external: [1.2.3]}}}\n", "addresses.nodes[n1].external[0]"},
		{"stun without servers", validRelay + "addresses: {stun: {servers: []}}\n", "addresses.stun.servers: at least one STUN server"},
		{"stun interval too short", validRelay + "addresses: {stun: {servers: ['stun.example.net:3478'], interval: 100ms}}\n", "addresses.stun.interval: must be at least 1s"},
		{"stun interval negative", validRelay + "addresses: {stun: {servers: ['stun.example.net:3478'], interval: -1m}}\n", "addresses.stun.interval: must be at least 1s"},
		{"negative quota", validRelay + "quotas: {allocationsTotal: -1}\n", "quotas: limits must not be negative"},
		{"bad duration", validRelay + "drainGracePeriod: soon\n", "time: invalid duration"},
		{"bad interface name", validRelay + "fastPath: {enabled: true, interfaces: [eth0, 'a/b']}\n", `fastPath.interfaces[1]: "a/b" is not an interface name`},
		{"unknown fast path mode", validRelay + "fastPath: {mode: Fast}\n", `fastPath.mode: must be Auto, Enabled or Disabled, got "Fast"`},
		{"enabled contradicting mode", validRelay + "fastPath: {mode: Disabled, enabled: true}\n", `fastPath.enabled: true contradicts mode Disabled`},
		{"bad log level", validRelay + "log: {level: loud}\n", `log.level: must be debug, info, warn or error, got "loud"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRelay([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestParseCredentialsErrors(t *testing.T) {
	const v = "version: turnpike.dev/relay/v1\n"
	tests := []struct{ name, yaml, want string }{
		{"valid", v + "users: [{username: a, key: 0123456789abcdef0123456789abcdef}]\nsharedSecrets: [{secret: 0123456789abcdef}]\n", ""},
		{"plaintext instead of a key", v + "users: [{username: a, key: hunter2}]\n", "users[0].key: must be the 32 hex digits"},
		{"same key twice", v + "users: [{username: a, key: 0123456789abcdef0123456789abcdef}, {username: a, key: 0123456789ABCDEF0123456789abcdef}]\n", `users[1]: user "a" has the same key twice`},
		{"rotating user", v + "users: [{username: a, key: 0123456789abcdef0123456789abcdef}, {username: a, key: ffffffffffffffffffffffffffffffff, notAfter: '2026-01-01T00:00:00Z'}]\n", ""},
		{"short secret", v + "sharedSecrets: [{secret: short}]\n", "sharedSecrets[0].secret: must be at least 16 characters"},
		{"window reversed", v + "sharedSecrets: [{secret: 0123456789abcdef, notBefore: '2026-01-02T00:00:00Z', notAfter: '2026-01-01T00:00:00Z'}]\n", "sharedSecrets[0].notAfter: must be after notBefore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCredentials([]byte(tt.yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid credentials refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestSocketHash: only socket settings change the hash.
func TestSocketHash(t *testing.T) {
	base, err := ParseRelay([]byte(validRelay))
	if err != nil {
		t.Fatal(err)
	}
	hot := *base
	hot.Realm, hot.Quotas.AllocationsTotal = "other", 5
	hot.Addresses.Nodes = map[string]NodeAddresses{"n": {External: []string{"192.0.2.1"}}}
	if hot.SocketHash() != base.SocketHash() {
		t.Error("a hot-reloadable change altered the socket hash")
	}
	cold := *base
	cold.Listeners = []Listener{{Name: "udp", Protocol: UDP, Port: 3479}}
	if cold.SocketHash() == base.SocketHash() {
		t.Error("a listener port change kept the socket hash")
	}
	fast := *base
	fast.FastPath.Enabled = true
	if fast.SocketHash() == base.SocketHash() {
		t.Error("enabling the fast path kept the socket hash")
	}
}

// TestSTUNInterval: an explicit interval is kept, an unset one stays zero
// (the relay applies 60s) and is not rendered back.
func TestSTUNInterval(t *testing.T) {
	r, err := ParseRelay([]byte(validRelay + "addresses: {stun: {servers: ['stun.example.net:3478'], interval: 5m}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Addresses.STUN.Interval.Duration; got.Minutes() != 5 {
		t.Fatalf("interval = %v, want 5m", got)
	}
	r.Addresses.STUN.Interval = Duration{}
	out, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "interval") {
		t.Fatalf("an unset interval was rendered:\n%s", out)
	}
}

func TestParseNodeAddresses(t *testing.T) {
	tests := []struct {
		name, data string
		want       string // fmt of the entry; "error" for an error
	}{
		{"empty: no entry", "", "<nil>"},
		{"whitespace: no entry", " \n", "<nil>"},
		{"entry", `{"external":["203.0.113.1","2001:db8::1"],"source":"ExternalIP"}`, "&{[203.0.113.1 2001:db8::1] ExternalIP}"},
		{"STUN, no address", `{"source":"STUN"}`, "&{[] STUN}"},
		{"bad address", `{"external":["203.0.113.300"]}`, "error"},
		{"unknown field", `{"externl":["203.0.113.1"]}`, "error"},
	}
	for _, tt := range tests {
		n, err := ParseNodeAddresses([]byte(tt.data))
		got := fmt.Sprint(n)
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("%s: %s (%v), want %s", tt.name, got, err, tt.want)
		}
	}
}

// TestFastPathMode: mode wins; the older enabled: true means Enabled; an
// unset fastPath is Disabled (the operator renders its Auto explicitly).
func TestFastPathMode(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want FastPathMode
	}{
		{"", FastPathDisabled},
		{"fastPath: {enabled: true}\n", FastPathEnabled},
		{"fastPath: {mode: Auto, socket: /run/turnpike/fastpath.sock}\n", FastPathAuto},
		{"fastPath: {mode: Enabled, enabled: true}\n", FastPathEnabled},
		{"fastPath: {mode: Disabled}\n", FastPathDisabled},
	} {
		r, err := ParseRelay([]byte(validRelay + tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if got := r.FastPath.EffectiveMode(); got != tt.want {
			t.Errorf("%q: mode %s, want %s", tt.yaml, got, tt.want)
		}
	}
}
