//go:build e2e

package e2e

import (
	"net"
	"testing"
	"time"
)

// testSSRF: scenario 6. A client with valid credentials asks node-a's relay
// for peers on the node's internal network and at the cloud metadata
// address: both refused with 403, counted by reason in
// turnpike_relay_peers_denied_total, and nothing reaches the internal host.
// node-a's own internal address is admitted as a permission (its relay
// ports are other allocations), but nothing reaches a port of it outside
// the relay range, and each refused packet is counted (reason "node").
func testSSRF(t *testing.T, w *world) {
	node := w.lab.nodes()[0] // node-a, with the internal network
	pass := w.secret(t, staticCred, "password")
	internal := w.lab.lanA.ListenPacket("udp4", lanA+":9")
	const nodeInternal = "10.10.0.2" // node-a's own address on the internal network
	onNode := w.lab.nodeA.ListenPacket("udp4", nodeInternal+":9")

	const privateSeries = `turnpike_relay_peers_denied_total{reason="private"}`
	const linkLocalSeries = `turnpike_relay_peers_denied_total{reason="link_local"}`
	const nodeSeries = `turnpike_relay_peers_denied_total{reason="node"}`
	privateBefore := relayMetric(t, node, privateSeries)
	linkLocalBefore := relayMetric(t, node, linkLocalSeries)
	nodeBefore := relayMetric(t, node, nodeSeries)

	relayConn, err := allocate(t, w.lab.client1, turnAddr(node.publicIP), staticUser, pass)
	if err != nil {
		t.Fatalf("allocate on %s: %v", node.name, err)
	}
	for _, peer := range []string{lanA, metadataIP} {
		if code := createPermission(t, relayConn, peer); code != 403 {
			t.Errorf("CreatePermission for %s: got %d, want 403", peer, code)
		}
	}
	if code := createPermission(t, relayConn, nodeInternal); code != 0 {
		t.Errorf("CreatePermission for the node's own %s: got %d, want success (its relay ports are peers)", nodeInternal, code)
	}
	// A Send to a refused peer, or to a port of the node outside the relay
	// range, must not come out of the relay.
	for _, target := range []net.PacketConn{internal, onNode} {
		for range 3 {
			_, _ = relayConn.WriteTo([]byte("ssrf"), target.LocalAddr())
		}
		_ = target.SetReadDeadline(time.Now().Add(time.Second))
		if n, from, err := target.ReadFrom(make([]byte, 100)); err == nil {
			t.Errorf("%s received %d bytes from %s", target.LocalAddr(), n, from)
		}
	}

	if got := relayMetric(t, node, privateSeries) - privateBefore; got < 1 {
		t.Errorf("%s went up by %v, want at least 1", privateSeries, got)
	}
	if got := relayMetric(t, node, nodeSeries) - nodeBefore; got < 3 {
		t.Errorf("%s went up by %v, want at least 3", nodeSeries, got)
	}
	if got := relayMetric(t, node, linkLocalSeries) - linkLocalBefore; got < 1 {
		t.Errorf("%s went up by %v, want at least 1", linkLocalSeries, got)
	}
}
