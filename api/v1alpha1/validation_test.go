package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/turnpike-dev/turnpike/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// create sends a manifest to the API server as is, so the test sees exactly
// what a user running `kubectl apply` would.
func create(t *testing.T, manifest string) error {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatalf("bad test manifest: %v", err)
	}
	obj.SetNamespace("default")
	return env.Client.Create(context.Background(), obj)
}

// turnServer is a valid TurnServer whose spec ends with spec, indented by two.
func turnServer(name, spec string) string {
	return fmt.Sprintf("apiVersion: turnpike.dev/v1alpha1\nkind: TurnServer\nmetadata:\n  name: %s\nspec:\n%s", name, spec)
}

const validListeners = `
  listeners:
  - {name: udp, protocol: UDP, port: 3478}
  - {name: tcp, protocol: TCP, port: 3478}
  - {name: tls, protocol: TLS, port: 5349, tlsSecretRef: {name: cert}}
`

func TestTurnServerValidation(t *testing.T) {
	const interfaceMsg = "fastPath.interfaces must be network interface names: 1-15 characters, no '/', ':' or whitespace"
	tests := []struct {
		name string
		spec string
		want string // substring of the API server's error; "" means accepted
	}{
		{"valid", "  realm: example.com" + validListeners, ""},
		{"valid with policy and ranges", `  realm: example.com
  listeners: [{name: udp, protocol: UDP, port: 3478}]
  relayPortRange: {min: 40000, max: 40100}
  peerPolicy: {allow: ["10.20.0.0/16", "fd00::/8"], deny: ["10.20.30.0/24"]}
  externalAddresses: [{nodeName: n1, addresses: ["203.0.113.7", "2001:db8::7"]}]`, ""},
		{"empty realm", `  realm: "  "` + validListeners, "realm must not be empty"},
		{"URL nodes per family in range", "  realm: example.com\n  urlNodesPerFamily: 32" + validListeners, ""},
		{"no URL nodes", "  realm: example.com\n  urlNodesPerFamily: 0" + validListeners, "should be greater than or equal to 1"},
		{"too many URL nodes", "  realm: example.com\n  urlNodesPerFamily: 33" + validListeners, "should be less than or equal to 32"},
		{"no listeners", "  realm: example.com\n  listeners: []", "should have at least 1 items"},
		{"duplicate listener names", `  realm: example.com
  listeners:
  - {name: a, protocol: UDP, port: 3478}
  - {name: a, protocol: TCP, port: 3479}`, "Duplicate value"},
		{"same protocol and port twice", `  realm: example.com
  listeners:
  - {name: a, protocol: UDP, port: 3478}
  - {name: b, protocol: UDP, port: 3478}`, "two listeners cannot share a port on the same transport"},
		{"DTLS on a UDP listener's port", `  realm: example.com
  listeners:
  - {name: a, protocol: UDP, port: 3478}
  - {name: b, protocol: DTLS, port: 3478, tlsSecretRef: {name: cert}}`, "two listeners cannot share a port on the same transport"},
		{"port zero", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 0}]`, "should be greater than or equal to 1"},
		{"port too large", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 70000}]`, "should be less than or equal to 65535"},
		{"unknown protocol", `  realm: example.com
  listeners: [{name: a, protocol: SCTP, port: 3478}]`, `supported values: "UDP", "TCP", "TLS", "DTLS"`},
		{"relay range min above max", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relayPortRange: {min: 50000, max: 40000}`, "relayPortRange.min must not be greater than relayPortRange.max"},
		{"listener inside relay range", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 50000}]`, "a listener port must not be inside relayPortRange"},
		{"TLS without secret", `  realm: example.com
  listeners: [{name: a, protocol: TLS, port: 5349}]`, "TLS and DTLS listeners need tlsSecretRef"},
		{"DTLS without secret", `  realm: example.com
  listeners: [{name: a, protocol: DTLS, port: 5349}]`, "TLS and DTLS listeners need tlsSecretRef"},
		{"secret on a UDP listener", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478, tlsSecretRef: {name: cert}}]`, "tlsSecretRef is only for TLS and DTLS listeners"},
		{"malformed allow CIDR", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  peerPolicy: {allow: ["10.0.0.0/33"]}`, "must be a CIDR such as 10.0.0.0/8"},
		{"malformed deny CIDR", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  peerPolicy: {deny: ["not-a-cidr"]}`, "must be a CIDR such as 10.0.0.0/8"},
		{"malformed cluster CIDR", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  peerPolicy: {clusterCIDRs: ["10.96.0.0"]}`, "must be a CIDR such as 10.0.0.0/8"},
		{"malformed external address", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  externalAddresses: [{nodeName: n1, addresses: ["203.0.113.300"]}]`, "must be an IPv4 or IPv6 address"},
		{"hostname and STUN", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  hostname: turn.example.com
  stun: {servers: ["stun.example.net:3478", "[2001:db8::1]:3478"]}`, ""},
		{"hostname not a DNS name", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  hostname: "Turn_Server"`, "hostname must be a lower-case DNS name"},
		{"STUN server without port", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  stun: {servers: ["stun.example.net"]}`, "should match"},
		{"STUN without servers", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  stun: {servers: []}`, "should have at least 1 items"},
		{"bad log level", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {logLevel: loud}`, `supported values: "debug", "info", "warn", "error"`},
		{"behaviour discovery", "  realm: example.com\n  behaviorDiscovery: {alternatePort: 3479, alternateAddresses: [198.51.100.2, \"2001:db8::2\"]}" + validListeners, ""},
		{"behaviour discovery on a listener's port", "  realm: example.com\n  behaviorDiscovery: {alternatePort: 3478}" + validListeners,
			"behaviorDiscovery.alternatePort must not be the port of a UDP or DTLS listener"},
		{"behaviour discovery on the TCP listener's port is fine", `  realm: example.com
  behaviorDiscovery: {alternatePort: 5349}` + validListeners, ""},
		{"behaviour discovery in the relay range", "  realm: example.com\n  behaviorDiscovery: {alternatePort: 50000}" + validListeners,
			"behaviorDiscovery.alternatePort must not be inside relayPortRange"},
		{"behaviour discovery without a UDP listener", `  realm: example.com
  listeners: [{name: tcp, protocol: TCP, port: 3478}]
  behaviorDiscovery: {alternatePort: 3479}`, "behaviorDiscovery needs a UDP listener"},
		{"behaviour discovery with a bad address", "  realm: example.com\n  behaviorDiscovery: {alternatePort: 3479, alternateAddresses: [eth1]}" + validListeners,
			"must be an IPv4 or IPv6 address"},
		{"behaviour discovery without a port", "  realm: example.com\n  behaviorDiscovery: {}" + validListeners, "alternatePort: Required value"},
		{"fastPath on named interfaces", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: [eth0, "bond0.100", enp3s0f1np1, lo]}}`, ""},
		{"fastPath Disabled", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {mode: Disabled}}`, ""},
		{"fastPath mode unknown", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {mode: Always}}`, `supported values: "Auto", "Enabled", "Disabled"`},
		{"fastPath on the bind interfaces", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: []}}`, ""},
		{"fastPath interface with a slash", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: [eth0, "eth0/1"]}}`, interfaceMsg},
		{"fastPath interface with whitespace", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: ["eth 0"]}}`, interfaceMsg},
		{"fastPath interface with a vertical tab", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: ["eth\v0"]}}`, interfaceMsg},
		{"fastPath interface with a colon", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: ["eth0:1"]}}`, interfaceMsg},
		{"fastPath interface dot-dot", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: [".."]}}`, interfaceMsg},
		{"fastPath interface empty", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: [""]}}`, interfaceMsg},
		{"fastPath interface longer than 15 bytes", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: ["vethabcdef012345"]}}`, interfaceMsg},
		{"fastPath interface of 15 characters but more bytes", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: ["ééééééééé"]}}`, interfaceMsg},
		{"fastPath interface twice", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: [eth0, eth0]}}`, "Duplicate value"},
		{"fastPath on more than 16 interfaces", `  realm: example.com
  listeners: [{name: a, protocol: UDP, port: 3478}]
  relay: {fastPath: {enabled: true, interfaces: [e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11, e12, e13, e14, e15, e16]}}`, "must have at most 16 items"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := create(t, turnServer(fmt.Sprintf("ts-%d", i), tt.spec))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid TurnServer refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("invalid TurnServer accepted; want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestTurnCredentialValidation(t *testing.T) {
	tc := func(name, spec string) string {
		return fmt.Sprintf("apiVersion: turnpike.dev/v1alpha1\nkind: TurnCredential\nmetadata:\n  name: %s\nspec:\n  turnServerRef: {name: relay}\n%s", name, spec)
	}
	tests := []struct {
		name, spec, want string
	}{
		{"static", "  type: Static\n  username: alice", ""},
		{"shared secret with rotation", "  type: SharedSecret\n  ttl: 1h\n  rotation: {interval: 24h, overlap: 1h}", ""},
		{"static without username", "  type: Static", "a Static credential needs username"},
		{"shared secret with username", "  type: SharedSecret\n  username: bob", "username is only for Static credentials"},
		{"ttl on static", "  type: Static\n  username: alice\n  ttl: 1h", "ttl is only for SharedSecret credentials"},
		{"overlap too short", "  type: SharedSecret\n  rotation: {interval: 24h, overlap: 30s}", "rotation.overlap must be at least 2m"},
		{"overlap not shorter than interval", "  type: SharedSecret\n  rotation: {interval: 1h, overlap: 1h}", "rotation.overlap must be shorter than rotation.interval"},
		{"colon in username", "  type: Static\n  username: a:b", "should match"},
		{"unknown type", "  type: OAuth", `supported values: "Static", "SharedSecret"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := create(t, tc(fmt.Sprintf("tc-%d", i), tt.spec))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid TurnCredential refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("invalid TurnCredential accepted; want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}
