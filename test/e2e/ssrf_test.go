//go:build e2e

package e2e

import (
	"testing"
	"time"
)

// testSSRF: scenario 6. A client with valid credentials asks node-a's relay
// for peers on the node's internal network and at the cloud metadata
// address: both refused with 403, counted by reason in
// turnpike_relay_peers_denied_total, and nothing reaches the internal host.
func testSSRF(t *testing.T, w *world) {
	node := w.lab.nodes()[0] // node-a, with the internal network
	pass := w.secret(t, staticCred, "password")
	internal := w.lab.lanA.ListenPacket("udp4", lanA+":9")

	const privateSeries = `turnpike_relay_peers_denied_total{reason="private"}`
	const linkLocalSeries = `turnpike_relay_peers_denied_total{reason="link_local"}`
	privateBefore := relayMetric(t, node, privateSeries)
	linkLocalBefore := relayMetric(t, node, linkLocalSeries)

	relayConn, err := allocate(t, w.lab.client1, turnAddr(node.publicIP), staticUser, pass)
	if err != nil {
		t.Fatalf("allocate on %s: %v", node.name, err)
	}
	for _, peer := range []string{lanA, metadataIP, "10.10.0.2"} {
		if code := createPermission(t, relayConn, peer); code != 403 {
			t.Errorf("CreatePermission for %s: got %d, want 403", peer, code)
		}
	}
	// A Send to the refused peer must not come out of the relay either.
	_, _ = relayConn.WriteTo([]byte("ssrf"), internal.LocalAddr())
	_ = internal.SetReadDeadline(time.Now().Add(time.Second))
	if n, from, err := internal.ReadFrom(make([]byte, 100)); err == nil {
		t.Errorf("the internal host received %d bytes from %s", n, from)
	}

	// 10.10.0.2 is node-a's own internal address: private too.
	if got := relayMetric(t, node, privateSeries) - privateBefore; got < 2 {
		t.Errorf("%s went up by %v, want at least 2", privateSeries, got)
	}
	if got := relayMetric(t, node, linkLocalSeries) - linkLocalBefore; got < 1 {
		t.Errorf("%s went up by %v, want at least 1", linkLocalSeries, got)
	}
}
