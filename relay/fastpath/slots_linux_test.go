//go:build linux

package fastpath

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/test/netlab"
)

// The tables of channels stay consistent through any sequence of Put and
// Delete: every channel written is found where the program looks (its
// slot, else the hash map), in one place only and with its latest value, a
// deleted one nowhere, and no slot holds a channel that is not there. Half
// the channels share their slot with another, and some change their peer
// (which moves them out of their slot and in again). A fifth have their
// relay socket on an address of its own, which keeps IPv6 ones out of the
// table. Every write to a table is checked for what a datagram racing it
// could see.
func TestSlotTablesConsistent(t *testing.T) {
	for _, family := range []struct {
		name                string
		client, peer, relay string
		otherRelay          string // the relay address of a fifth of the channels
		check               func(*testing.T, *Offload, []Channel, map[int]Channel)
	}{
		{"IPv4", "10.0.0.2", "10.0.1.2", "10.0.1.1", "10.0.1.3", func(t *testing.T, o *Offload, pool []Channel, live map[int]Channel) {
			checkSlotTable(t, o, o.chans4, pool, live)
		}},
		{"IPv6", "fd00::2", "fd00:1::2", "::", "fd00:1::1", func(t *testing.T, o *Offload, pool []Channel, live map[int]Channel) {
			checkSlotTable(t, o, o.chans6, pool, live)
		}},
	} {
		t.Run(family.name, func(t *testing.T) {
			o := loadOnLo(t)
			o.chans4.entries = &safeWrites[turnrelayChan4]{t: t, store: o.chans4.entries}
			o.chans6.entries = &safeWrites[turnrelayChan6]{t: t, store: o.chans6.entries}

			base := Channel{
				Client:   netip.AddrPortFrom(netip.MustParseAddr(family.client), 1),
				Listener: netip.AddrPortFrom(netip.IPv6Unspecified(), 3478), Number: 0x4001,
				Peer:  netip.AddrPortFrom(netip.MustParseAddr(family.peer), 9),
				Relay: netip.AddrPortFrom(netip.MustParseAddr(family.relay), 1),
			}
			if base.Client.Addr().Is4() {
				base.Listener = netip.AddrPortFrom(netip.IPv4Unspecified(), 3478)
			}
			pool := crowdedChannels(o, base, 600)
			for i := 4; i < len(pool); i += 5 {
				pool[i].Relay = netip.AddrPortFrom(netip.MustParseAddr(family.otherRelay), pool[i].Relay.Port())
			}
			rng := rand.New(rand.NewPCG(1, 2))
			live := map[int]Channel{}
			for step := range 4000 {
				i := rng.IntN(len(pool))
				c := pool[i]
				if _, ok := live[i]; ok && rng.IntN(2) == 0 {
					if err := o.Delete(c); err != nil {
						t.Fatalf("step %d: delete: %v", step, err)
					}
					delete(live, i)
				} else {
					c.ChannelExpires = time.Now().Add(time.Duration(1+rng.IntN(1000)) * time.Second) // a new value each time
					if rng.IntN(4) == 0 {
						c.Peer = netip.AddrPortFrom(c.Peer.Addr(), uint16(1+rng.IntN(9)))
					}
					if err := o.Put(c); err != nil {
						t.Fatalf("step %d: put: %v", step, err)
					}
					live[i] = c
				}
				if step%500 == 0 || step == 3999 {
					family.check(t, o, pool, live)
				}
			}
			for i, c := range live {
				if err := o.Delete(c); err != nil {
					t.Fatal(err)
				}
				delete(live, i)
			}
			family.check(t, o, pool, live)
			if n := len(o.chans4.owner) + len(o.chans6.owner); n != 0 {
				t.Errorf("all deleted, but the tables hold %d channels", n)
			}
		})
	}
}

// crowdedChannels returns n channels like base, each on its own relay
// port: pairs that share a slot, then channels on slots of their own (as
// far as chance goes).
func crowdedChannels(o *Offload, base Channel, n int) []Channel {
	with := func(i int, clientPort uint16, number uint16) Channel {
		c := base
		c.Client = netip.AddrPortFrom(c.Client.Addr(), clientPort)
		c.Number = number
		c.Relay = netip.AddrPortFrom(c.Relay.Addr(), uint16(10000+i))
		c.PermissionExpires = time.Now().Add(time.Hour)
		return c
	}
	slot := func(c Channel) uint32 {
		if k := chanKey(c); is4(k) {
			return o.chans4.slot(k)
		} else {
			return o.chans6.slot(k)
		}
	}
	var out []Channel
	first := map[uint32]Channel{}
	for p := 1; len(out) < n/2; p++ {
		for num := uint16(0x4000); len(out) < n/2 && num <= 0x4fff; num += 7 {
			c := with(len(out), uint16(p), num)
			s := slot(c)
			if f, ok := first[s]; ok && f.Client.Port() != c.Client.Port() {
				out = append(out, with(len(out), f.Client.Port(), f.Number), with(len(out)+1, c.Client.Port(), c.Number))
				delete(first, s)
			} else if !ok {
				first[s] = c
			}
		}
	}
	for len(out) < n {
		out = append(out, with(len(out), uint16(20000+len(out)), 0x4002))
	}
	return out
}

// checkSlotTable compares the maps with what was written.
func checkSlotTable[E slotEntry[E]](t *testing.T, o *Offload, tab *slotTable[E], pool []Channel, live map[int]Channel) {
	t.Helper()
	taken := 0
	for slot := range tab.slots {
		var e E
		if err := tab.entries.Lookup(slot, &e); err != nil {
			t.Fatal(err)
		}
		owner, owned := tab.owner[slot]
		if e.number() == 0 {
			if owned {
				t.Errorf("slot %d: free, but owned by %+v", slot, owner)
			}
			continue
		}
		taken++
		if !owned || owner != e.key() {
			t.Errorf("slot %d holds %+v, owned by %+v (%v)", slot, e, owner, owned)
		}
		if tab.slot(e.key()) != slot {
			t.Errorf("slot %d holds a channel of slot %d", slot, tab.slot(e.key()))
		}
	}
	if taken != len(tab.owner) {
		t.Errorf("%d slots taken for %d channels in the table", taken, len(tab.owner))
	}
	for i, c := range pool {
		k, _ := channelEntry(c)
		e, inTable, err := tab.lookup(k)
		if err != nil {
			t.Fatal(err)
		}
		var hv turnrelayChanVal
		inHash := o.objs.Channels.Lookup(&k, &hv) == nil
		w, isLive := live[i]
		switch {
		case !isLive && (inTable || inHash):
			t.Errorf("%v channel %#x: deleted, but found (table %v, hash map %v)", c.Client, c.Number, inTable, inHash)
		case isLive && inTable == inHash:
			t.Errorf("%v channel %#x: in the table %v, in the hash map %v; want exactly one", c.Client, c.Number, inTable, inHash)
		case isLive:
			_, v := channelEntry(w)
			expires := hv.ExpiresNs
			if inTable {
				if want, fits := tab.entry(k, v); !fits {
					t.Errorf("%v channel %#x: in the table, which cannot hold it", c.Client, c.Number)
				} else if e.withLearntFrom(want) != want {
					t.Errorf("%v channel %#x: entry %+v, want %+v", c.Client, c.Number, e, want)
				}
				expires = expiresOf(e)
			} else if got := withExpiry(hv, v.ExpiresNs); got != v {
				t.Errorf("%v channel %#x: %+v in the hash map, want %+v (expiry aside)", c.Client, c.Number, hv, v)
			}
			// Expiries are computed at each write: allow for the time between.
			if diff := int64(expires) - int64(v.ExpiresNs); diff < -int64(time.Second) || diff > int64(time.Second) {
				t.Errorf("%v channel %#x: expires at %d, want %d (the latest Put)", c.Client, c.Number, expires, v.ExpiresNs)
			}
		}
	}
}

// withExpiry is v with another expiry.
func withExpiry(v turnrelayChanVal, expires uint64) turnrelayChanVal {
	v.ExpiresNs = expires
	return v
}

// expiresOf is an entry's expiry.
func expiresOf(e any) uint64 {
	switch e := e.(type) {
	case turnrelayChan4:
		return e.ExpiresNs
	case turnrelayChan6:
		return e.ExpiresNs
	}
	panic("not an entry")
}

// safeWrites fails the test on a write to a table that a datagram racing
// it could see half done with a key that matches: the program may read any
// mix of a slot's old and new bytes. Safe are: any write to a free slot
// that leaves it free; a free slot taking the channel whose entry it
// already holds; a channel leaving (only its number changes, to 0); and a
// channel's expiry or learnt listener address changing.
type safeWrites[E slotEntry[E]] struct {
	t     *testing.T
	store slotStore
}

func (w *safeWrites[E]) Lookup(key, valueOut any) error { return w.store.Lookup(key, valueOut) }

func (w *safeWrites[E]) Put(key, value any) error {
	var old E
	if err := w.store.Lookup(key, &old); err != nil {
		return err
	}
	next := *value.(*E)
	if !safeWrite(old, next) {
		w.t.Errorf("slot %v: %+v written over %+v: a racing datagram could match a half-written entry", key, next, old)
	}
	return w.store.Put(key, value)
}

func safeWrite[E slotEntry[E]](old, next E) bool {
	switch {
	case old.number() == 0 && next.number() == 0:
		return true
	case old.number() == 0: // moving in: the rest written before
		return old.withNumber(next.number()) == next
	case next.number() == 0: // moving out
		return next.withNumber(old.number()) == old
	default:
		return old.withLearntFrom(next) == next
	}
}

// A slot rests after its channel moved out: another channel that hashes to
// it goes to the hash map until slotReuseDelay has passed, so a datagram
// still reading the old entry cannot copy the new one's values. A channel
// whose peer changes moves out too, to the hash map.
func TestSlotRestsBeforeReuse(t *testing.T) {
	o := loadOnLo(t)
	now := time.Now()
	o.chans4.now = func() time.Time { return now }
	base := Channel{
		Client:   netip.MustParseAddrPort("10.0.0.2:1"),
		Listener: netip.MustParseAddrPort("0.0.0.0:3478"), Number: 0x4001,
		Peer:  netip.MustParseAddrPort("10.0.1.2:9"),
		Relay: netip.MustParseAddrPort("10.0.1.1:1"),
	}
	pair := crowdedChannels(o, base, 2) // two channels in one slot
	a, b := pair[0], pair[1]
	where := func(c Channel) string {
		var v turnrelayChanVal
		k := chanKey(c)
		switch {
		case InSlotTable(o, c):
			return "table"
		case o.objs.Channels.Lookup(&k, &v) == nil:
			return "hash map"
		}
		return "nowhere"
	}
	step := func(name string, op func(Channel) error, c Channel, want string) {
		t.Helper()
		if err := op(c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := where(c); got != want {
			t.Fatalf("%s: %v channel %#x is in the %s, want the %s", name, c.Client, c.Number, got, want)
		}
	}
	step("a moves in", o.Put, a, "table")
	step("a moves out", o.Delete, a, "nowhere")
	step("b, the slot resting", o.Put, b, "hash map")
	step("b deleted", o.Delete, b, "nowhere")
	now = now.Add(slotReuseDelay)
	step("b, the slot rested", o.Put, b, "table")
	b.Peer = netip.AddrPortFrom(b.Peer.Addr(), 10)
	step("b with another peer", o.Put, b, "hash map")
	step("a, the slot resting again", o.Put, a, "hash map")
	if _, taken := o.chans4.owner[o.chans4.slot(chanKey(a))]; taken {
		t.Error("the slot is still taken")
	}
}

// A channel whose move out fails stays its slot's: a second Delete
// removes it (before, the first one forgot it and left it in the kernel).
func TestSlotDeleteFailureKeepsTheChannel(t *testing.T) {
	o := loadOnLo(t)
	c := Channel{
		Client:   netip.MustParseAddrPort("10.0.0.2:1"),
		Listener: netip.MustParseAddrPort("0.0.0.0:3478"), Number: 0x4001,
		Peer:           netip.MustParseAddrPort("10.0.1.2:9"),
		Relay:          netip.MustParseAddrPort("10.0.1.1:1"),
		ChannelExpires: time.Now().Add(time.Minute), PermissionExpires: time.Now().Add(time.Minute),
	}
	if err := o.Put(c); err != nil || !InSlotTable(o, c) {
		t.Fatalf("put: %v; in the table: %v", err, InSlotTable(o, c))
	}
	store := o.chans4.entries
	o.chans4.entries = failingWrites{store}
	if err := o.Delete(c); err == nil {
		t.Fatal("delete with the table's writes failing: no error")
	}
	if !InSlotTable(o, c) {
		t.Fatal("after a failed delete the channel is no longer its slot's")
	}
	o.chans4.entries = store
	if err := o.Delete(c); err != nil {
		t.Fatal(err)
	}
	if e, found, err := o.chans4.lookup(chanKey(c)); err != nil || found {
		t.Fatalf("deleted, but the program still finds it: %+v (%v)", e, err)
	}
}

// failingWrites is a table store whose writes fail.
type failingWrites struct{ slotStore }

func (failingWrites) Put(key, value any) error { return errors.New("injected failure") }

// loadOnLo loads the program onto lo in a namespace of its own.
func loadOnLo(t *testing.T) *Offload {
	t.Helper()
	var o *Offload
	ns := netlab.New(t).Namespace("relay")
	if err := ns.Do(func() (err error) { o, err = Load([]string{"lo"}); return err }); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return o
}

// An IPv6 channel's entry holds none of the relay host's addresses, so the
// table takes one only when its relayed datagrams leave from the address
// the client sent to: its relay socket on all addresses or on the
// listener's. Any other goes to the hash map, and a channel in the table
// moves there when its listener's address changes so.
func TestSlotTableIPv6HoldsNoAddressOfItsOwn(t *testing.T) {
	o := loadOnLo(t)
	base := Channel{
		Client:   netip.MustParseAddrPort("[fd00::2]:1"),
		Listener: netip.MustParseAddrPort("[fd00::1]:3478"), Number: 0x4001,
		Peer:           netip.MustParseAddrPort("[fd00:1::2]:9"),
		ChannelExpires: time.Now().Add(time.Hour), PermissionExpires: time.Now().Add(time.Hour),
	}
	used := map[uint32]bool{} // each case on a slot of its own
	clientPort := uint16(0)
	for i, tc := range []struct {
		relay, listener string
		inTable         bool
	}{
		{"::", "fd00::1", true},
		{"fd00::1", "fd00::1", true},
		{"::", "::", true},
		{"fd00:1::1", "fd00::1", false},
		{"fd00:1::1", "::", false},
	} {
		c := base
		for {
			clientPort++
			c.Client = netip.AddrPortFrom(c.Client.Addr(), clientPort)
			if slot := o.chans6.slot(chanKey(c)); !used[slot] {
				used[slot] = true
				break
			}
		}
		c.Relay = netip.AddrPortFrom(netip.MustParseAddr(tc.relay), uint16(10000+i))
		c.Listener = netip.AddrPortFrom(netip.MustParseAddr(tc.listener), 3478)
		if err := o.Put(c); err != nil {
			t.Fatal(err)
		}
		var v turnrelayChanVal
		k := chanKey(c)
		_, inTable, err := o.chans6.lookup(k)
		if err != nil {
			t.Fatal(err)
		}
		inHash := o.objs.Channels.Lookup(&k, &v) == nil
		if inTable != tc.inTable || inHash == tc.inTable {
			t.Errorf("relay socket on %s, listener on %s: in the table %v, in the hash map %v; want the table %v",
				tc.relay, tc.listener, inTable, inHash, tc.inTable)
		}
		if tc.relay == tc.listener {
			c.Listener = netip.MustParseAddrPort("[fd00::3]:3478")
			if err := o.Put(c); err != nil {
				t.Fatal(err)
			}
			_, inTable, _ = o.chans6.lookup(k)
			if inHash := o.objs.Channels.Lookup(&k, &v) == nil; inTable || !inHash || v.ListenIp != addr16(c.Listener.Addr()) {
				t.Errorf("listener moved from %s to %s: in the table %v, in the hash map %v (listener %v)",
					tc.listener, c.Listener.Addr(), inTable, inHash, v.ListenIp)
			}
		}
	}
}
