//go:build linux

package fastpath

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Slots of the tables of channels (turnrelay.c's CHAN4_SLOTS and
// CHAN6_SLOTS).
const (
	chan4Slots = 65536
	chan6Slots = 65536
)

// slotHash is the program's slot_mix and slot_end over the words of an
// IPv6 channel's key as they are in the map (addr16, port).
func slotHash(seed uint32, words ...uint32) uint32 {
	h := seed
	for _, w := range words {
		h ^= w
		h *= 0x9e3779b1
		h ^= h >> 15
	}
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	return h ^ h>>16
}

// slotEntry is an entry of a table of channels: turnrelayChan4 or
// turnrelayChan6.
type slotEntry[E any] interface {
	comparable
	key() turnrelayChanKey
	number() uint16
	withNumber(uint16) E
	// withLearntFrom is the entry with the listener address and the
	// expiry of other: what changes in place.
	withLearntFrom(other E) E
	withListenIPOf(other E) E
}

// slotEntryOf makes the table entry of a channel's key and value, and
// says whether the table can hold it.
type slotEntryOf[E any] func(turnrelayChanKey, turnrelayChanVal) (E, bool)

// slotTable is the relay's side of a table of channels of one family: a
// channel can only be in the slot its key hashes to, so the program reads
// one entry to find it. A channel whose slot another channel has goes to
// the hash map instead, as does a channel the table cannot hold (an IPv6
// one whose relay socket is on an address of its own: entry6). Its methods
// run under Offload.mu.
//
// The program reads a slot while it is written, so every write keeps what
// it can see consistent. A slot's channel number is 0 while it is free,
// and no ChannelData carries 0, so the program skips a free slot whatever
// the rest holds. A channel moves in with two writes: the whole entry with
// number 0, then the same with its number. A channel moves out by writing
// its entry with number 0. Between those, only the expiry and the learnt
// listener address (of an IPv6 channel, its tag: one aligned 8-byte
// word) change in place: a datagram racing such a write sees
// the channel, with one or the other expiry. A channel whose other values
// change moves out, to the hash map.
//
// A datagram that matched a channel just before it moved out may still be
// reading the entry (its CPU held up between comparing the key and
// copying the value, or writing a learnt listener address back), so a
// slot rests for slotReuseDelay before another channel moves in; a channel
// that hashes to a resting slot goes to the hash map.
type slotTable[E slotEntry[E]] struct {
	seed    uint32
	v6      bool
	slots   uint32 // a power of two
	entries slotStore
	entry   slotEntryOf[E]
	now     func() time.Time
	// owner is the channel in each taken slot.
	owner map[uint32]turnrelayChanKey
	// freed is when each resting slot's channel moved out.
	freed map[uint32]time.Time
}

// slotReuseDelay is how long a slot rests after its channel moved out:
// far longer than a program run, even one held up by an interrupt or the
// hypervisor.
const slotReuseDelay = time.Second

// slotStore holds a table's entries: its map (*ebpf.Map; an interface so
// that a test can check every write).
type slotStore interface {
	Lookup(key, valueOut any) error
	Put(key, value any) error
}

func newSlotTables(seed uint32, chans4, chans6 *ebpf.Map) (*slotTable[turnrelayChan4], *slotTable[turnrelayChan6]) {
	entry6 := func(k turnrelayChanKey, v turnrelayChanVal) (turnrelayChan6, bool) { return entry6(seed, k, v) }
	return newSlotTable(seed, false, chan4Slots, chans4, entry4), newSlotTable(seed, true, chan6Slots, chans6, entry6)
}

func newSlotTable[E slotEntry[E]](seed uint32, v6 bool, slots uint32, entries slotStore, entry slotEntryOf[E]) *slotTable[E] {
	return &slotTable[E]{seed: seed, v6: v6, slots: slots, entries: entries, entry: entry, now: time.Now,
		owner: map[uint32]turnrelayChanKey{}, freed: map[uint32]time.Time{}}
}

func newSeed() uint32 { return rand.Uint32() }

// slot is the one slot where the program looks for k.
func (t *slotTable[E]) slot(k turnrelayChanKey) uint32 {
	if !t.v6 {
		return chan4Hash(t.seed, k.ClientIp.W[3], k.ClientPort, k.ListenPort, k.Channel) & (t.slots - 1)
	}
	w := k.ClientIp.W
	return slotHash(t.seed, w[0], w[1], w[2], w[3], uint32(k.ClientPort)|uint32(k.ListenPort)<<16, uint32(k.Channel)) & (t.slots - 1)
}

// chan4Hash is the program's chan4_hash.
func chan4Hash(seed, clientIP uint32, clientPort, listenPort, channel uint16) uint32 {
	h := seed ^ clientIP
	h *= 0x9e3779b1
	h ^= h >> 15
	h ^= uint32(clientPort) | uint32(listenPort)<<16
	h *= 0x85ebca6b
	h ^= h >> 13
	h ^= uint32(channel)
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// is4 says whether k is an IPv4 channel.
func is4(k turnrelayChanKey) bool {
	return k.ClientIp.W[0] == 0 && k.ClientIp.W[1] == 0 && k.ClientIp.W[2] == addr16v4Prefix
}

// addr16v4Prefix is the third word of an IPv4-mapped address as addr16
// gives it.
var addr16v4Prefix = addr16(netip.MustParseAddr("::ffff:192.0.2.1")).W[2]

// put writes k's channel, of the table's family, into its slot and says
// whether it did: false when the table cannot hold it, its slot holds
// another channel or rests, or its values other than the expiry changed
// (then it belongs in the hash map). A learnt listener address is kept.
func (t *slotTable[E]) put(k turnrelayChanKey, v turnrelayChanVal) (bool, error) {
	slot := t.slot(k)
	e, fits := t.entry(k, v)
	owner, taken := t.owner[slot]
	switch {
	case taken && owner != k:
		return false, nil
	case taken:
		var old E
		if err := t.entries.Lookup(slot, &old); err != nil {
			return true, fmt.Errorf("channel table: %w", err)
		}
		if v.Flags&chanListenAny != 0 {
			e = e.withListenIPOf(old)
		}
		if fits && old.withLearntFrom(e) == e {
			return true, t.write(slot, e) // only the expiry changes: in place
		}
		if err := t.moveOut(slot, old); err != nil {
			return true, err
		}
		return false, nil
	case !fits || t.resting(slot):
		return false, nil
	}
	if err := t.write(slot, e.withNumber(0)); err != nil {
		return false, err
	}
	t.owner[slot] = k
	return true, t.write(slot, e)
}

// delete takes k's channel out of its slot and says whether it was there.
func (t *slotTable[E]) delete(k turnrelayChanKey) (bool, error) {
	slot := t.slot(k)
	if owner, ok := t.owner[slot]; !ok || owner != k {
		return false, nil
	}
	var e E
	if err := t.entries.Lookup(slot, &e); err != nil {
		return true, fmt.Errorf("channel table: %w", err)
	}
	return true, t.moveOut(slot, e)
}

// moveOut frees slot, which holds e, and lets it rest. Until the write
// succeeds the slot stays its channel's.
func (t *slotTable[E]) moveOut(slot uint32, e E) error {
	if err := t.write(slot, e.withNumber(0)); err != nil {
		return err
	}
	delete(t.owner, slot)
	t.freed[slot] = t.now()
	return nil
}

// resting says whether slot's channel moved out less than slotReuseDelay
// ago.
func (t *slotTable[E]) resting(slot uint32) bool {
	freed, ok := t.freed[slot]
	if ok && t.now().Sub(freed) < slotReuseDelay {
		return true
	}
	delete(t.freed, slot)
	return false
}

func (t *slotTable[E]) write(slot uint32, e E) error {
	if err := t.entries.Put(slot, &e); err != nil {
		return fmt.Errorf("channel table: %w", err)
	}
	return nil
}

// lookup finds k's entry as the program does: in its slot, with its key.
func (t *slotTable[E]) lookup(k turnrelayChanKey) (E, bool, error) {
	var e E
	if err := t.entries.Lookup(t.slot(k), &e); err != nil {
		return e, false, err
	}
	return e, e.number() != 0 && e.key() == k, nil
}

// entry4 is k and v as an entry of the IPv4 table: 4-byte addresses.
func entry4(k turnrelayChanKey, v turnrelayChanVal) (turnrelayChan4, bool) {
	return turnrelayChan4{
		ClientIp: k.ClientIp.W[3], ClientPort: k.ClientPort, ListenPort: k.ListenPort, Channel: k.Channel,
		Flags:  v.Flags,
		PeerIp: v.PeerIp.W[3], RelayIp: v.RelayIp.W[3], ListenIp: v.ListenIp.W[3],
		PeerPort: v.PeerPort, RelayPort: v.RelayPort,
		LocalPortMin: v.LocalPortMin, LocalPortMax: v.LocalPortMax,
		ExpiresNs: v.ExpiresNs,
	}, true
}

// entry6 is k and v as an entry of the IPv6 table, which holds none of
// this host's addresses (turnrelay.c's struct chan6): only a channel whose
// relay socket is on all addresses or on the listener's fits. Of the
// listener's address it keeps the tag; 0 until the program learns the
// address, on a listener on all addresses.
func entry6(seed uint32, k turnrelayChanKey, v turnrelayChanVal) (turnrelayChan6, bool) {
	e := turnrelayChan6{
		ClientIp: k.ClientIp, ClientPort: k.ClientPort, ListenPort: k.ListenPort, Channel: k.Channel,
		Flags:  v.Flags,
		PeerIp: v.PeerIp, PeerPort: v.PeerPort, RelayPort: v.RelayPort,
		LocalPortMin: v.LocalPortMin, LocalPortMax: v.LocalPortMax,
		ExpiresNs: v.ExpiresNs,
	}
	switch {
	case v.RelayIp == turnrelayAddr{}:
		e.Flags |= chanRelayAny
	case v.RelayIp != v.ListenIp:
		return e, false
	}
	if v.Flags&chanListenAny == 0 {
		e.ListenTag = addrTag(seed, v.ListenIp)
	}
	return e, true
}

// addrTag is the program's addr_tag.
func addrTag(seed uint32, a turnrelayAddr) uint64 {
	x := (uint64(a.W[0])<<32 | uint64(a.W[1])) ^ uint64(seed)
	x *= 0x9e3779b97f4a7c15
	x ^= x >> 32
	x ^= uint64(a.W[2])<<32 | uint64(a.W[3])
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	return x | 1
}

func (e turnrelayChan4) key() turnrelayChanKey {
	return turnrelayChanKey{ClientIp: turnrelayAddr{W: [4]uint32{0, 0, addr16v4Prefix, e.ClientIp}}, ClientPort: e.ClientPort, ListenPort: e.ListenPort, Channel: e.Channel}
}
func (e turnrelayChan6) key() turnrelayChanKey {
	return turnrelayChanKey{ClientIp: e.ClientIp, ClientPort: e.ClientPort, ListenPort: e.ListenPort, Channel: e.Channel}
}

func (e turnrelayChan4) number() uint16 { return e.Channel }
func (e turnrelayChan6) number() uint16 { return e.Channel }

func (e turnrelayChan4) withNumber(n uint16) turnrelayChan4 { e.Channel = n; return e }
func (e turnrelayChan6) withNumber(n uint16) turnrelayChan6 { e.Channel = n; return e }

func (e turnrelayChan4) withListenIPOf(o turnrelayChan4) turnrelayChan4 {
	e.ListenIp = o.ListenIp
	return e
}

func (e turnrelayChan6) withListenIPOf(o turnrelayChan6) turnrelayChan6 {
	e.ListenTag = o.ListenTag
	return e
}

func (e turnrelayChan4) withLearntFrom(o turnrelayChan4) turnrelayChan4 {
	e.ExpiresNs = o.ExpiresNs
	return e.withListenIPOf(o)
}

func (e turnrelayChan6) withLearntFrom(o turnrelayChan6) turnrelayChan6 {
	e.ExpiresNs = o.ExpiresNs
	return e.withListenIPOf(o)
}
