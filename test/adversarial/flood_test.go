package adversarial

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// Floods (issue item 7): what an unauthenticated client, or one with a
// wrong password, can make the relay do and write, at the rate it likes.

// quietLog is the most lines a flood of hundreds of messages may add to the
// relay's log: a few per kind of event, not one per message.
const quietLog = 10

var (
	allocateType  = typeOf(stun.MethodAllocate, stun.ClassRequest)
	udpTransport  = rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	floodMessages = 500
)

// drainAnswers counts what the relay sends until it has been silent for
// answerTimeout.
func drainAnswers(c *client) int {
	n := 0
	for {
		if _, err := c.read(answerTimeout); err != nil {
			return n
		}
		n++
	}
}

// TestWrongPasswordFloodThrottled sends 500 Allocates with a wrong password
// as fast as one socket goes. The relay used to answer every one, with no
// per-source limit and nothing logged. It must stop answering that source
// after limits.authFailureBurst (20) failures plus authFailuresPerSecond
// (5) a second, count what it dropped, log it in a few lines, still serve
// a client from another address, and serve the flooding address again once
// it stops.
func TestWrongPasswordFloodThrottled(t *testing.T) {
	l := newLab(t, nil)
	c := l.dial("udp", false)
	c.integrity = stun.NewLongTermIntegrity(labUser, labRealm, "not-the-password")
	// pion answers a wrong MESSAGE-INTEGRITY with 400.
	if got := code(c.request(allocateType, udpTransport)); got <= 0 {
		t.Fatalf("Allocate with a wrong password: %d, want an error response", got)
	}
	lines := l.relay.logLines()
	for range floodMessages {
		if err := c.write(c.build(allocateType, udpTransport).Raw); err != nil {
			t.Fatal(err)
		}
	}
	answered := drainAnswers(c)
	// The burst, a few seconds' worth of the rate, and slack; the old relay
	// answered all 500.
	if answered > 60 {
		t.Errorf("the relay answered %d of %d wrong-password Allocates from one source", answered, floodMessages)
	}
	if got := l.relay.metric(t, "turnpike_relay_auth_throttled_total"); got < float64(floodMessages-60) {
		t.Errorf("auth_throttled_total = %v, want at least %d", got, floodMessages-60)
	}
	if added := l.relay.logLines() - lines; added > quietLog {
		t.Errorf("the flood wrote %d log lines", added)
	}
	if added := l.relay.logLines() - lines; added == 0 {
		t.Error("the flood was not logged at all")
	}

	other := l.dialFrom("udp", false, peerAddr)
	other.allocate(false)

	// The flooding address is throttled for a while, not for good: once
	// the failures stop, the right password works from it again.
	again := l.dial("udp", false)
	if !eventually(20*time.Second, func() bool {
		return code(again.request(allocateType, udpTransport)) == 0
	}) {
		t.Error("the flooding address cannot allocate with the right password 20 s after the flood")
	}
}

// TestRefusedPeersLogQuietly asks for 100 refused peers. The relay used to
// write two INFO lines for each.
func TestRefusedPeersLogQuietly(t *testing.T) {
	l := newLab(t, nil)
	c := l.dial("udp", false)
	c.allocate(false)
	lines := l.relay.logLines()
	const peers = 100
	for i := range peers {
		peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 9)
		if got := c.createPermission(peer); got != int(stun.CodeForbidden) {
			t.Fatalf("CreatePermission for %s: %d, want 403", peer, got)
		}
	}
	if added := l.relay.logLines() - lines; added > quietLog {
		t.Errorf("%d refused peers wrote %d log lines", peers, added)
	}
	if got := l.relay.metric(t, `turnpike_relay_peers_denied_total{reason="private"}`); got != peers {
		t.Errorf(`peers_denied_total{reason="private"} = %v, want %d`, got, peers)
	}
}

// TestUnknownAttributesLogQuietly sends 100 unauthenticated requests with
// an unknown comprehension-required attribute. The relay used to write an
// ERROR line for each.
func TestUnknownAttributesLogQuietly(t *testing.T) {
	l := newLab(t, nil)
	c := l.dial("udp", false)
	lines := l.relay.logLines()
	const requests = 100
	unknown := rawAttr(stun.AttrType(0x0031), []byte{1, 2, 3, 4}) // comprehension-required range, unassigned
	for range requests {
		if err := c.write(c.build(allocateType, udpTransport, unknown).Raw); err != nil {
			t.Fatal(err)
		}
	}
	drainAnswers(c)
	if added := l.relay.logLines() - lines; added > quietLog {
		t.Errorf("%d requests with an unknown attribute wrote %d log lines", requests, added)
	}
}
