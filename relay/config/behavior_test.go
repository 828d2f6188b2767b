package config

import (
	"strings"
	"testing"
)

// TestBehaviorDiscoveryConfig: stun.behaviorDiscovery needs a UDP listener
// and a free port; it changes the socket hash, and leaving it out does not.
func TestBehaviorDiscoveryConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"port only", validRelay + "stun: {behaviorDiscovery: {alternatePort: 3479}}\n", ""},
		{"with addresses", validRelay + "stun: {behaviorDiscovery: {alternatePort: 3479, alternateAddresses: ['198.51.100.2', '2001:db8::2']}}\n", ""},
		{"port of the listener", validRelay + "stun: {behaviorDiscovery: {alternatePort: 3478}}\n", "listener udp already uses UDP port 3478"},
		{"port missing", validRelay + "stun: {behaviorDiscovery: {}}\n", "alternatePort: must be 1-65535"},
		{"port in relay range", validRelay + "stun: {behaviorDiscovery: {alternatePort: 50000}}\n", "inside relayPortRange"},
		{"bad address", validRelay + "stun: {behaviorDiscovery: {alternatePort: 3479, alternateAddresses: ['nope']}}\n", "alternateAddresses[0]"},
		{"wildcard address", validRelay + "stun: {behaviorDiscovery: {alternatePort: 3479, alternateAddresses: ['0.0.0.0']}}\n", "not a unicast address"},
		{"no UDP listener", "version: turnpike.dev/relay/v1\nrealm: r\nlisteners: [{name: tcp, protocol: TCP, port: 3478}]\nstun: {behaviorDiscovery: {alternatePort: 3479}}\n", "needs a UDP listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRelay([]byte(tc.yaml))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	plain, _ := ParseRelay([]byte(validRelay))
	// The hash of validRelay before stun.behaviorDiscovery existed: relays
	// must not restart on an upgrade that does not turn it on.
	if got := plain.SocketHash(); got != "c7345d8329a213c9" {
		t.Errorf("socket hash of a relay.yaml without behaviorDiscovery changed to %s", got)
	}
	on, err := ParseRelay([]byte(validRelay + "stun: {behaviorDiscovery: {alternatePort: 3479}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if on.SocketHash() == plain.SocketHash() {
		t.Error("stun.behaviorDiscovery does not change the socket hash: turning it on would not open its sockets")
	}
}
