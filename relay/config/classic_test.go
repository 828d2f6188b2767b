package config

import "testing"

// TestClassicSTUN: classic Binding answers are on unless stun.classic is
// written false; the setting does not need new sockets.
func TestClassicSTUN(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       bool
	}{
		{"unset", validRelay, true},
		{"empty stun", validRelay + "stun: {}\n", true},
		{"true", validRelay + "stun: {classic: true}\n", true},
		{"false", validRelay + "stun: {classic: false}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRelay([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.STUN.ClassicEnabled(); got != tc.want {
				t.Errorf("ClassicEnabled = %v, want %v", got, tc.want)
			}
		})
	}
	on, _ := ParseRelay([]byte(validRelay))
	off, _ := ParseRelay([]byte(validRelay + "stun: {classic: false}\n"))
	if on.SocketHash() != off.SocketHash() {
		t.Error("stun.classic changes the socket hash: turning it off would restart the relays")
	}
}
