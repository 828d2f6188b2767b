//go:build linux

package fastpath

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/test/netlab"
)

// The table of IPv4 channels stays consistent through any sequence of Put
// and Delete: every channel written is found where the program looks (its
// slot, else the hash map), in one place only and with its latest value, a
// deleted one nowhere, and no slot holds a channel that is not there. Half
// the channels share their slot with another, and some change their peer
// (which moves them out of their slot and in again).
func TestChan4TableConsistent(t *testing.T) {
	var o *Offload
	ns := netlab.New(t).Namespace("relay")
	if err := ns.Do(func() (err error) { o, err = Load([]string{"lo"}); return err }); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = o.Close() })

	o.chans4.entries = &safeWrites{t: t, store: o.chans4.entries}
	pool := crowdedChannels(o.chans4.seed, 600)
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
			checkChan4Table(t, o, pool, live)
		}
	}
	for i, c := range live {
		if err := o.Delete(c); err != nil {
			t.Fatal(err)
		}
		delete(live, i)
	}
	checkChan4Table(t, o, pool, live)
	if len(o.chans4.owner) != 0 {
		t.Errorf("all deleted, but the table has %d channels", len(o.chans4.owner))
	}
}

// crowdedChannels returns n IPv4 channels, each on its own relay port:
// pairs that share a slot, then channels on slots of their own (as far as
// chance goes).
func crowdedChannels(seed uint32, n int) []Channel {
	base := Channel{
		Client:   netip.MustParseAddrPort("10.0.0.2:1"),
		Listener: netip.MustParseAddrPort("0.0.0.0:3478"), Number: 0x4001,
		Peer:  netip.MustParseAddrPort("10.0.1.2:9"),
		Relay: netip.MustParseAddrPort("10.0.1.1:1"),
	}
	with := func(i int, clientPort uint16, number uint16) Channel {
		c := base
		c.Client = netip.AddrPortFrom(c.Client.Addr(), clientPort)
		c.Number = number
		c.Relay = netip.AddrPortFrom(c.Relay.Addr(), uint16(10000+i))
		c.PermissionExpires = time.Now().Add(time.Hour)
		return c
	}
	var out []Channel
	first := map[uint32]Channel{}
	for p := 1; len(out) < n/2; p++ {
		for num := uint16(0x4000); len(out) < n/2 && num <= 0x4fff; num += 7 {
			c := with(len(out), uint16(p), num)
			slot := chan4Slot(seed, chanKey(c))
			if f, ok := first[slot]; ok && f.Client.Port() != c.Client.Port() {
				out = append(out, with(len(out), f.Client.Port(), f.Number), with(len(out)+1, c.Client.Port(), c.Number))
				delete(first, slot)
			} else if !ok {
				first[slot] = c
			}
		}
	}
	for len(out) < n {
		out = append(out, with(len(out), uint16(20000+len(out)), 0x4002))
	}
	return out
}

// checkChan4Table compares the maps with what was written.
func checkChan4Table(t *testing.T, o *Offload, pool []Channel, live map[int]Channel) {
	t.Helper()
	tab := o.chans4
	taken := 0
	for slot := range uint32(chan4Slots) {
		var e turnrelayChan4
		if err := tab.entries.Lookup(slot, &e); err != nil {
			t.Fatal(err)
		}
		owner, owned := tab.owner[slot]
		if e.Channel == 0 {
			if owned {
				t.Errorf("slot %d: free, but owned by %+v", slot, owner)
			}
			continue
		}
		taken++
		k := turnrelayChanKey{ClientIp: turnrelayAddr{W: [4]uint32{0, 0, addr16v4Prefix, e.ClientIp}}, ClientPort: e.ClientPort, ListenPort: e.ListenPort, Channel: e.Channel}
		if !owned || owner != k {
			t.Errorf("slot %d holds %+v, owned by %+v (%v)", slot, e, owner, owned)
		}
		if chan4Slot(tab.seed, k) != slot {
			t.Errorf("slot %d holds a channel of slot %d", slot, chan4Slot(tab.seed, k))
		}
	}
	if taken != len(tab.owner) {
		t.Errorf("%d slots taken for %d channels in the table", taken, len(tab.owner))
	}
	for i, c := range pool {
		k, v := channelEntry(c)
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
			_, v = channelEntry(w)
			got := hv.ExpiresNs
			if inTable {
				got = e.ExpiresNs
				if want := entry4(k, v); e.PeerIp != want.PeerIp || e.PeerPort != want.PeerPort || e.RelayPort != want.RelayPort || e.Flags != want.Flags {
					t.Errorf("%v channel %#x: entry %+v, want %+v", c.Client, c.Number, e, want)
				}
			} else if hv.PeerPort != v.PeerPort {
				t.Errorf("%v channel %#x: peer port %d in the hash map, want %d", c.Client, c.Number, hv.PeerPort, v.PeerPort)
			}
			// Expiries are computed at each write: allow for the time between.
			if diff := int64(got) - int64(v.ExpiresNs); diff < -int64(time.Second) || diff > int64(time.Second) {
				t.Errorf("%v channel %#x: expires at %d, want %d (the latest Put)", c.Client, c.Number, got, v.ExpiresNs)
			}
		}
	}
}

// safeWrites fails the test on a write to the table that a datagram racing
// it could see half done with a key that matches: the program may read any
// mix of a slot's old and new bytes. Safe are: any write to a free slot
// that leaves it free; a free slot taking the channel whose entry it
// already holds; a channel leaving (only its number changes, to 0); and a
// channel's expiry or learnt listener address changing.
type safeWrites struct {
	t     *testing.T
	store chan4Store
}

func (w *safeWrites) Lookup(key, valueOut any) error { return w.store.Lookup(key, valueOut) }

func (w *safeWrites) Put(key, value any) error {
	var old turnrelayChan4
	if err := w.store.Lookup(key, &old); err != nil {
		return err
	}
	next := *value.(*turnrelayChan4)
	if !safeWrite(old, next) {
		w.t.Errorf("slot %v: %+v written over %+v: a racing datagram could match a half-written entry", key, next, old)
	}
	return w.store.Put(key, value)
}

func safeWrite(old, next turnrelayChan4) bool {
	switch {
	case old.Channel == 0 && next.Channel == 0:
		return true
	case old.Channel == 0:
		old.Channel = next.Channel // moving in: the rest written before
		return old == next
	case next.Channel == 0:
		next.Channel = old.Channel // moving out
		return old == next
	default:
		old.ExpiresNs, old.ListenIp = next.ExpiresNs, next.ListenIp
		return old == next
	}
}
