//go:build linux

package fastpath_test

import (
	"net/netip"
	"testing"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/test/netlab"
)

// An IPv4 channel that the dense table has no room for goes to the hash
// map, and the program finds it there: when its index line is full, and
// when the line holds another channel with its tag (the program reads that
// channel's entry, sees another key, and falls back to the hash map).
func TestIPv4ChannelsOutsideTheDenseTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		// conflict returns the channels to write first, and the number of
		// the channel that then finds no room.
		conflict func(o *fastpath.Offload, c fastpath.Channel) ([]fastpath.Channel, uint16)
	}{
		{"line full", lineFull},
		{"tag taken", tagTaken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netlab.New(t).Namespace("relay")
			o := loadIn(t, ns, "lo")
			e := loopbackEnds(t, ns)
			others, number := tc.conflict(o, e.channel(0x4001, true))
			c := e.channel(number, true)
			for _, x := range others {
				if err := o.Put(x); err != nil {
					t.Fatal(err)
				}
				if !fastpath.InDenseTable(o, x) {
					t.Fatalf("%v: not in the dense table", x.Client)
				}
			}
			if err := o.Put(c); err != nil {
				t.Fatal(err)
			}
			if fastpath.InDenseTable(o, c) {
				t.Fatal("the channel went into the dense table; want the hash map")
			}
			send(t, e.client, addr(e.listener), channelData(number, []byte("ping")))
			expect(t, e.peer, addr(e.relay), []byte("ping"))
			send(t, e.peer, addr(e.relay), []byte("pong"))
			expect(t, e.client, addr(e.listener), channelData(number, []byte("pong")))

			// With the others gone it stays where it is, and still relays;
			// deleted, it passes to userspace.
			for _, x := range others {
				if err := o.Delete(x); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.Put(c); err != nil {
				t.Fatal(err)
			}
			send(t, e.client, addr(e.listener), channelData(number, []byte("again")))
			expect(t, e.peer, addr(e.relay), []byte("again"))
			expectNothing(t, e.listener, e.relay)
			if err := o.Delete(c); err != nil {
				t.Fatal(err)
			}
			send(t, e.client, addr(e.listener), channelData(number, []byte("after")))
			expect(t, e.listener, addr(e.client), channelData(number, []byte("after")))
		})
	}
}

// other is c from another client (and listener port), on relay port
// 1000+i.
func other(c fastpath.Channel, i int, clientPort, listenPort, number uint16) fastpath.Channel {
	c.Client = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), clientPort)
	c.Listener = netip.AddrPortFrom(c.Listener.Addr(), listenPort)
	c.Number = number
	c.Relay = netip.AddrPortFrom(c.Relay.Addr(), uint16(1000+i))
	return c
}

// lineFull fills c's index line with other channels.
func lineFull(o *fastpath.Offload, c fastpath.Channel) ([]fastpath.Channel, uint16) {
	line, _ := fastpath.IndexPlace(o, c)
	place := fastpath.Places(o, other(c, 0, 0, 0, c.Number))
	var out []fastpath.Channel
	for i := 0; len(out) < fastpath.IndexSlots; i++ {
		p, lp := uint16(1+i%65535), uint16(3478+i/65535)
		if l, _ := place(p, lp, c.Number); l == line {
			out = append(out, other(c, len(out), p, lp, c.Number))
		}
	}
	return out, c.Number
}

// tagTaken finds another channel with the line and tag of one of c's
// client's channel numbers, and returns it and that number.
func tagTaken(o *fastpath.Offload, c fastpath.Channel) ([]fastpath.Channel, uint16) {
	mine := map[[2]uint32]uint16{}
	place := fastpath.Places(o, c)
	for n := uint16(0x4000); n <= 0x4fff; n++ {
		line, tag := place(c.Client.Port(), c.Listener.Port(), n)
		mine[[2]uint32{line, tag}] = n
	}
	place = fastpath.Places(o, other(c, 0, 0, 0, c.Number))
	for l := 1; l < 65536; l++ {
		for p := 1; p < 65536; p++ {
			line, tag := place(uint16(p), uint16(l), 0x4001)
			if n, ok := mine[[2]uint32{line, tag}]; ok {
				return []fastpath.Channel{other(c, 0, uint16(p), uint16(l), 0x4001)}, n
			}
		}
	}
	panic("no channel with the same index place")
}
