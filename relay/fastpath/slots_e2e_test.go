//go:build linux

package fastpath_test

import (
	"net/netip"
	"testing"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/test/netlab"
)

// A channel whose slot in the table of its family another channel has goes
// to the hash map, and the program finds it there: it reads the slot, sees
// another key, and falls back to the hash map. The other channel differs
// in one part of the key only, so that the program must compare each.
func TestChannelOutsideItsSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		// differ returns c with one part of its key changed; i picks the
		// new value.
		differ func(c fastpath.Channel, i int) fastpath.Channel
	}{
		{"client address", func(c fastpath.Channel, i int) fastpath.Channel {
			a := netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)})
			if c.Client.Addr().Is6() {
				a = netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
			}
			c.Client = netip.AddrPortFrom(a, c.Client.Port())
			return c
		}},
		{"client port", func(c fastpath.Channel, i int) fastpath.Channel {
			c.Client = netip.AddrPortFrom(c.Client.Addr(), uint16(i))
			return c
		}},
		{"listener port", func(c fastpath.Channel, i int) fastpath.Channel {
			c.Listener = netip.AddrPortFrom(c.Listener.Addr(), uint16(i))
			return c
		}},
		{"channel number", func(c fastpath.Channel, i int) fastpath.Channel {
			c.Number = 0x4000 + uint16(i%0x1000)
			return c
		}},
	} {
		for family, ends := range map[string]func(*testing.T, *netlab.Namespace) ends{"IPv4": loopbackEnds, "IPv6": loopbackEnds6} {
			t.Run(family+"/"+tc.name, func(t *testing.T) {
				ns := netlab.New(t).Namespace("relay")
				o := loadIn(t, ns, "lo")
				e := ends(t, ns)
				c, squatter := sharingASlot(o, e, tc.differ)
				if err := o.Put(squatter); err != nil {
					t.Fatal(err)
				}
				if !fastpath.InSlotTable(o, squatter) {
					t.Fatalf("%v: not in the table", squatter.Client)
				}
				if err := o.Put(c); err != nil {
					t.Fatal(err)
				}
				if fastpath.InSlotTable(o, c) {
					t.Fatal("the channel went into the table; want the hash map")
				}
				send(t, e.client, addr(e.listener), channelData(c.Number, []byte("ping")))
				expect(t, e.peer, addr(e.relay), []byte("ping"))
				send(t, e.peer, addr(e.relay), []byte("pong"))
				expect(t, e.client, addr(e.listener), channelData(c.Number, []byte("pong")))

				// With the other gone it stays where it is, and still relays;
				// deleted, it passes to userspace.
				if err := o.Delete(squatter); err != nil {
					t.Fatal(err)
				}
				if err := o.Put(c); err != nil {
					t.Fatal(err)
				}
				send(t, e.client, addr(e.listener), channelData(c.Number, []byte("again")))
				expect(t, e.peer, addr(e.relay), []byte("again"))
				expectNothing(t, e.listener, e.relay)
				if err := o.Delete(c); err != nil {
					t.Fatal(err)
				}
				send(t, e.client, addr(e.listener), channelData(c.Number, []byte("after")))
				expect(t, e.listener, addr(e.client), channelData(c.Number, []byte("after")))
			})
		}
	}
}

// sharingASlot finds a channel of e's client and another one, made by
// differ, that hash to the same slot. The other has a relay port of its
// own and no socket behind it.
func sharingASlot(o *fastpath.Offload, e ends, differ func(fastpath.Channel, int) fastpath.Channel) (c, squatter fastpath.Channel) {
	for n := uint16(0x4000); n <= 0x4fff; n++ {
		c = e.channel(n, true)
		for i := 1; i < 1<<20; i++ {
			squatter = differ(c, i)
			if fastpath.ChannelSlot(o, squatter) == fastpath.ChannelSlot(o, c) && squatter != c {
				squatter.Relay = netip.AddrPortFrom(c.Relay.Addr(), c.Relay.Port()^1)
				return c, squatter
			}
		}
	}
	panic("no two channels in one slot")
}
