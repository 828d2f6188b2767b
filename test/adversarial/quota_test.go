package adversarial

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// channelQuota is quotas.channelsPerAllocation in the quota tests.
const channelQuota = 2

func withChannelQuota(cfg *config.Relay) { cfg.Quotas.ChannelsPerAllocation = channelQuota }

// bindChannels binds channelQuota+3 channels to distinct peer ports with
// requests of type typ and returns how many the relay granted.
func bindChannels(c *client, typ uint16) int {
	granted := 0
	for i := range channelQuota + 3 {
		peer := netip.AddrPortFrom(netip.MustParseAddr(peerAddr), uint16(5000+i))
		if c.channelBind(typ, uint16(0x4000+i), peer) == 0 {
			granted++
		}
	}
	return granted
}

var channelBindType = typeOf(stun.MethodChannelBind, stun.ClassRequest)

// TestChannelQuotaHolds: with quotas.channelsPerAllocation 2, the relay
// used to grant 5 of 5 ChannelBinds sent with type 0xC009 (pion ignores the
// top two bits of the type, the quota check did not), and 5 of 5 over TCP
// after one Binding request typed 0xC001. However the type is spelled, at
// most 2 may be granted; plain ChannelBinds get exactly 2, which shows the
// quota is in force.
func TestChannelQuotaHolds(t *testing.T) {
	l := newLab(t, withChannelQuota)

	plain := l.dial("udp", false)
	plain.allocate(false)
	if got := bindChannels(plain, channelBindType); got != channelQuota {
		t.Errorf("plain ChannelBinds: %d granted, want %d", got, channelQuota)
	}

	for _, network := range []string{"udp", "tcp"} {
		c := l.dial(network, false)
		c.allocate(false)
		if got := bindChannels(c, 0xC000|channelBindType); got > channelQuota {
			t.Errorf("%s: ChannelBinds typed %#04x: %d granted, quota %d", network, 0xC000|channelBindType, got, channelQuota)
		}
	}

	c := l.dial("tcp", false)
	c.allocate(false)
	bogusBinding := c.build(0xC000 | typeOf(stun.MethodBinding, stun.ClassRequest))
	_ = c.write(bogusBinding.Raw) // the relay may close the connection for it
	if got := bindChannels(c, channelBindType); got > channelQuota {
		t.Errorf("tcp: after a Binding typed %#04x: %d ChannelBinds granted, quota %d", bogusBinding.Raw[0:2], got, channelQuota)
	}
}
