//go:build linux

package fastpath

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/test/netlab"
)

// The dense table of IPv4 channels and its index stay consistent through
// any sequence of Put and Delete: every channel written is found where the
// program looks (the dense table through its index line, else the hash
// map), in one place only and with its latest value, a deleted one
// nowhere, and no index slot leads to a free entry. The channels are
// chosen to crowd a few index lines: full lines and equal tags.
func TestDenseIndexConsistent(t *testing.T) {
	var o *Offload
	ns := netlab.New(t).Namespace("relay")
	if err := ns.Do(func() (err error) { o, err = Load([]string{"lo"}); return err }); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = o.Close() })

	pool := crowdedChannels(o.dense.seed, 600)
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
			if err := o.Put(c); err != nil {
				t.Fatalf("step %d: put: %v", step, err)
			}
			live[i] = c
		}
		if step%500 == 0 || step == 3999 {
			checkIndex(t, o, pool, live)
		}
	}
	for i, c := range live {
		if err := o.Delete(c); err != nil {
			t.Fatal(err)
		}
		delete(live, i)
	}
	checkIndex(t, o, pool, live)
	if o.dense.lowFree != 0 || len(o.dense.at) != 0 {
		t.Errorf("all deleted, but the table has %d channels, lowest free entry %d", len(o.dense.at), o.dense.lowFree)
	}
}

// crowdedChannels returns n IPv4 channels, each on its own relay port, a
// third of them in the same index line, and pairs with equal line and tag.
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
	crowded, _ := indexPlace(seed, chanKey(base))
	seen := map[[2]uint32]bool{}
	for p := 1; len(out) < n/3 && p < 65536; p++ {
		for num := uint16(0x4000); len(out) < n/3 && num <= 0x4fff; num++ {
			line, tag := indexPlace(seed, chanKey(with(0, uint16(p), num)))
			if line == crowded && !seen[[2]uint32{line, tag}] {
				seen[[2]uint32{line, tag}] = true
				out = append(out, with(len(out), uint16(p), num))
			}
		}
	}
	// Equal places: the first channel of each place seen twice, and the
	// second.
	first := map[[2]uint32]Channel{}
	for p := 1; len(out) < 2*n/3; p++ {
		for num := uint16(0x4000); len(out) < 2*n/3 && num <= 0x4fff; num += 7 {
			c := with(len(out), uint16(p), num)
			line, tag := indexPlace(seed, chanKey(c))
			place := [2]uint32{line, tag}
			if f, ok := first[place]; ok && f.Client.Port() != c.Client.Port() {
				out = append(out, with(len(out), f.Client.Port(), f.Number), with(len(out)+1, c.Client.Port(), c.Number))
				delete(first, place)
			} else if !ok {
				first[place] = c
			}
		}
	}
	for len(out) < n {
		out = append(out, with(len(out), uint16(20000+len(out)), 0x4002))
	}
	return out
}

// checkIndex compares the maps with what was written.
func checkIndex(t *testing.T, o *Offload, pool []Channel, live map[int]Channel) {
	t.Helper()
	d := o.dense
	slots := 0
	for line := range uint32(indexLines) {
		var l turnrelayIndexLine
		if err := d.index.Lookup(line, &l); err != nil {
			t.Fatal(err)
		}
		tags := map[uint32]bool{}
		for _, slot := range l.Slot {
			if slot == 0 {
				continue
			}
			slots++
			tag, i := slot>>16, slot&0xffff
			if tags[tag] {
				t.Errorf("line %d: tag %#x twice", line, tag)
			}
			tags[tag] = true
			var e turnrelayChan4
			if err := d.entries.Lookup(i, &e); err != nil {
				t.Fatal(err)
			}
			k := turnrelayChanKey{ClientIp: turnrelayAddr{W: [4]uint32{0, 0, addr16v4Prefix, e.ClientIp}}, ClientPort: e.ClientPort, ListenPort: e.ListenPort, Channel: e.Channel}
			if !d.used[i] || e.Channel == 0 || d.at[k] != i {
				t.Errorf("line %d: slot %#x leads to entry %d (used %v): %+v", line, slot, i, d.used[i], e)
			}
			if l2, tag2 := indexPlace(d.seed, k); l2 != line || tag2 != tag {
				t.Errorf("line %d: slot %#x: its channel belongs in line %d with tag %#x", line, slot, l2, tag2)
			}
		}
	}
	if slots != len(d.at) {
		t.Errorf("%d index slots for %d channels in the table", slots, len(d.at))
	}
	used := 0
	for _, u := range d.used {
		if u {
			used++
		}
	}
	if used != len(d.at) {
		t.Errorf("%d entries taken for %d channels in the table", used, len(d.at))
	}
	for i, c := range pool {
		k, v := channelEntry(c)
		e, _, inDense, err := d.lookup(k)
		if err != nil {
			t.Fatal(err)
		}
		var hv turnrelayChanVal
		inHash := o.objs.Channels.Lookup(&k, &hv) == nil
		w, isLive := live[i]
		switch {
		case !isLive && (inDense || inHash):
			t.Errorf("%v channel %#x: deleted, but found (table %v, hash map %v)", c.Client, c.Number, inDense, inHash)
		case isLive && inDense == inHash:
			t.Errorf("%v channel %#x: in the table %v, in the hash map %v; want exactly one", c.Client, c.Number, inDense, inHash)
		case isLive:
			_, v = channelEntry(w)
			got := hv.ExpiresNs
			if inDense {
				got = e.ExpiresNs
				if want := entry4(k, v); e.PeerIp != want.PeerIp || e.RelayPort != want.RelayPort || e.Flags != want.Flags {
					t.Errorf("%v channel %#x: entry %+v, want %+v", c.Client, c.Number, e, want)
				}
			}
			// Expiries are computed at each write: allow for the time between.
			if diff := int64(got) - int64(v.ExpiresNs); diff < -int64(time.Second) || diff > int64(time.Second) {
				t.Errorf("%v channel %#x: expires at %d, want %d (the latest Put)", c.Client, c.Number, got, v.ExpiresNs)
			}
		}
	}
}
