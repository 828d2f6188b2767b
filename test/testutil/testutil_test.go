package testutil

import "testing"

// TestFreePortNeverRepeats: the kernel picks bind(0) ports at random, so
// without the record of ports handed out, a few hundred calls all but surely
// see one port twice (a test that asked for its TLS and metrics ports that
// way once bound both to one port).
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		port := FreePort(t)
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
	}
}
