package relay

import (
	"net"
	"strconv"
	"testing"

	"github.com/pion/stun/v4"
)

// TestEvenPortOnIPv6OnlyRelay: pion probes for an even port on IPv4 before
// it allocates one, whatever the family asked for; a relay serving IPv6
// alone answered every EVEN-PORT with 508.
func TestEvenPortOnIPv6OnlyRelay(t *testing.T) {
	ip6 := localAddr(t, true, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.Addresses.Bind = []string{ip6.String()}
	tr := startRelay(t, cfg, baseCredentials())
	s := conformanceServer{name: "turnpike", addr: net.JoinHostPort(ip6.String(), strconv.Itoa(tr.port)), relay: tr}
	checkReservedPair(t, s, "udp")
	c := s.dial(t, "udp")
	c.fetchNonce()
	res := c.signed(stun.MethodAllocate, false, requestedTransport(protoUDP), rawAttr(stun.AttrEvenPort, []byte{0x80}))
	relayed, err := xorAddrFrom(res, stun.AttrXORRelayedAddress)
	if code := errorCode(res); code != 0 || err != nil || !relayed.Addr().Is6() || relayed.Port()%2 != 0 {
		t.Errorf("EVEN-PORT without REQUESTED-ADDRESS-FAMILY: answer %d, relayed %v; want an even IPv6 port", code, relayed)
	}
}
