//go:build linux

package fastpath_test

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// outsideItsSlot returns a channel of e's client whose slot another
// channel (of another client port) holds, that one put already: put, the
// channel goes to the hash map.
func outsideItsSlot(t *testing.T, o *fastpath.Offload, e ends) fastpath.Channel {
	t.Helper()
	c, squatter := sharingASlot(o, e, func(c fastpath.Channel, i int) fastpath.Channel {
		c.Client = netip.AddrPortFrom(c.Client.Addr(), uint16(i))
		return c
	})
	if err := o.Put(squatter); err != nil {
		t.Fatal(err)
	}
	return c
}

// onAllAddresses is c with its listener on all addresses of its family.
func onAllAddresses(c fastpath.Channel) fastpath.Channel {
	c.Listener = netip.AddrPortFrom(unspecified(c.Listener.Addr()), c.Listener.Port())
	return c
}

// relayOnAllAddresses is c with its relay socket on all addresses of its
// family, as the relay binds it (and its listeners) unless told an
// address: then an IPv6 channel fits in the table.
func relayOnAllAddresses(c fastpath.Channel) fastpath.Channel {
	c.Relay = netip.AddrPortFrom(unspecified(c.Relay.Addr()), c.Relay.Port())
	return c
}

func unspecified(of netip.Addr) netip.Addr {
	if of.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// A channel of a listener on all addresses: the program learns the address
// the client sends to from its first ChannelData, in the channel's slot or
// in the hash map, and answers the peer from it; until then the peer's
// datagrams go to userspace. A refresh keeps what was learnt.
func TestListenerOnAllAddresses(t *testing.T) {
	for family, ends := range map[string]func(*testing.T, *netlab.Namespace) ends{"IPv4": loopbackEnds, "IPv6": loopbackEnds6} {
		for _, inSlot := range []bool{true, false} {
			name := family + "/in its slot"
			if !inSlot {
				name = family + "/in the hash map"
			}
			t.Run(name, func(t *testing.T) {
				ns := netlab.New(t).Namespace("relay")
				o := loadIn(t, ns, "lo")
				e := ends(t, ns)
				c := e.channel(0x4001, true)
				if !inSlot {
					c = outsideItsSlot(t, o, e)
				} else if family == "IPv6" {
					c = relayOnAllAddresses(c)
				}
				c = onAllAddresses(c)
				if err := o.Put(c); err != nil {
					t.Fatal(err)
				}
				if fastpath.InSlotTable(o, c) != inSlot {
					t.Fatalf("in its slot: %v, want %v", !inSlot, inSlot)
				}

				learnt := func(when string) {
					t.Helper()
					if want := addr(e.listener).Addr(); !fastpath.LearntListener(o, c, want) {
						t.Errorf("%s: the channel's listener address is not %v", when, want)
					}
				}
				send(t, e.peer, addr(e.relay), []byte("early"))
				expect(t, e.relay, addr(e.peer), []byte("early"))
				send(t, e.client, addr(e.listener), channelData(c.Number, []byte("ping")))
				expect(t, e.peer, addr(e.relay), []byte("ping"))
				learnt("after the first ChannelData")
				send(t, e.peer, addr(e.relay), []byte("pong"))
				expect(t, e.client, addr(e.listener), channelData(c.Number, []byte("pong")))

				c.ChannelExpires = c.ChannelExpires.Add(time.Minute)
				if err := o.Put(c); err != nil {
					t.Fatal(err)
				}
				learnt("after a refresh")
				send(t, e.peer, addr(e.relay), []byte("after the refresh"))
				expect(t, e.client, addr(e.listener), channelData(c.Number, []byte("after the refresh")))
			})
		}
	}
}

// An IPv6 datagram with an IPv4-mapped address (::ffff:a.b.c.d) is not
// the IPv4 host's it names. The program keys IPv4 channels by their
// client's mapped address, and an IPv6 datagram's key falls through to the
// hash map, where an IPv4 channel outside its slot sits: without a check
// the program would relay such a datagram as the IPv4 client's, and with a
// listener on all addresses learn its IPv6 destination as the one the
// client talks to. A mapped destination would be learnt as an IPv6
// channel's listener address. The kernel's IPv6 input drops a mapped
// source (the program runs before it): the program must pass such a
// datagram on untouched and relay nothing.
func TestIPv4MappedIPv6IsNoIPv4Client(t *testing.T) {
	mapped := func(a netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
	}
	for _, tc := range []struct {
		name string
		ends func(*testing.T, *netlab.Namespace) ends
		// listenAny puts the channel's listener on all addresses.
		listenAny bool
		// from and to are the frame's ends, given the channel.
		from, to func(fastpath.Channel) netip.AddrPort
	}{
		{"IPv4 channel/mapped source and destination", loopbackEnds, false,
			func(c fastpath.Channel) netip.AddrPort { return mapped(c.Client) },
			func(c fastpath.Channel) netip.AddrPort { return mapped(c.Listener) }},
		{"IPv4 channel on all addresses/mapped source", loopbackEnds, true,
			func(c fastpath.Channel) netip.AddrPort { return mapped(c.Client) },
			func(c fastpath.Channel) netip.AddrPort {
				return netip.AddrPortFrom(netip.IPv6Loopback(), c.Listener.Port())
			}},
		{"IPv6 channel on all addresses/mapped destination", loopbackEnds6, true,
			func(c fastpath.Channel) netip.AddrPort { return c.Client },
			func(c fastpath.Channel) netip.AddrPort {
				return mapped(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), c.Listener.Port()))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netlab.New(t).Namespace("relay")
			o := loadIn(t, ns, "lo")
			e := tc.ends(t, ns)
			// An IPv4 channel in the hash map, where an IPv6 key can meet
			// it; an IPv6 one where it lands.
			c := e.channel(0x4001, true)
			if c.Client.Addr().Is4() {
				c = outsideItsSlot(t, o, e)
			}
			if tc.listenAny {
				c = onAllAddresses(c)
			}
			if err := o.Put(c); err != nil {
				t.Fatal(err)
			}
			if c.Client.Addr().Is4() && fastpath.InSlotTable(o, c) {
				t.Fatal("the channel went into the table; want the hash map")
			}
			// The real client's datagram is relayed: the channel works.
			send(t, e.client, addr(e.listener), channelData(c.Number, []byte("real")))
			expect(t, e.peer, addr(e.relay), []byte("real"))

			before := counters(t, o)
			frame := udp6Frame(tc.from(c), tc.to(c), channelData(c.Number, []byte("spoofed")))
			if err := ns.Do(func() error { return sendFrame(1, unix.ETH_P_IPV6, frame) }); err != nil {
				t.Fatal(err)
			}
			expectNothing(t, e.peer, e.listener, e.relay)
			if d := counters(t, o).Sub(before); d.ToPeer.Packets != 0 {
				t.Fatalf("relayed %d IPv6 datagrams from %v to %v", d.ToPeer.Packets, tc.from(c), tc.to(c))
			}
			if tc.listenAny {
				if want := addr(e.listener).Addr().Unmap(); !fastpath.LearntListener(o, c, want) {
					t.Errorf("the listener address learnt for the channel is not the one the real client sent to, %v", want)
				}
			}
		})
	}
}

// An IPv6 channel's entry in the table keeps a tag of its listener's
// address, not the address: the program relays a client's ChannelData
// only when the tag of the datagram's destination matches (or, on a
// listener on all addresses, learns it). A datagram from the client's
// address and port to another address, or to the unspecified address
// (which matches a channel that has learnt nothing), must pass on
// untouched.
func TestIPv6ChannelOnlyForItsListenerAddress(t *testing.T) {
	for _, tc := range []struct {
		name      string
		listenAny bool
		to        string
	}{
		{"listener on ::1/another address", false, "fd00::1"},
		{"listener on ::1/the unspecified address", false, "::"},
		{"listener on all addresses, nothing learnt/the unspecified address", true, "::"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netlab.New(t).Namespace("relay")
			o := loadIn(t, ns, "lo")
			e := loopbackEnds6(t, ns)
			c := e.channel(0x4001, true)
			if tc.listenAny {
				c = relayOnAllAddresses(onAllAddresses(c))
			}
			if err := o.Put(c); err != nil {
				t.Fatal(err)
			}
			if !fastpath.InSlotTable(o, c) {
				t.Fatal("the channel went into the hash map; want the table")
			}
			before := counters(t, o)
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.to), c.Listener.Port())
			frame := udp6Frame(c.Client, to, channelData(c.Number, []byte("elsewhere")))
			if err := ns.Do(func() error { return sendFrame(1, unix.ETH_P_IPV6, frame) }); err != nil {
				t.Fatal(err)
			}
			expectNothing(t, e.peer, e.listener, e.relay)
			if d := counters(t, o).Sub(before); d.ToPeer.Packets != 0 {
				t.Fatalf("relayed %d datagrams from %v to %v", d.ToPeer.Packets, c.Client, to)
			}
			// The real client's datagram is relayed: the channel works.
			send(t, e.client, addr(e.listener), channelData(c.Number, []byte("real")))
			expect(t, e.peer, addr(e.relay), []byte("real"))
		})
	}
}
