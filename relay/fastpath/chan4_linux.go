//go:build linux

package fastpath

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/cilium/ebpf"
)

// chan4Slots is the number of slots of the table of IPv4 channels
// (turnrelay.c's CHAN4_SLOTS).
const chan4Slots = 65536

// chan4Hash is the program's chan4_hash: the words of a channel's key as
// they are in the map (addr16, port), mixed with the seed.
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

// chan4Slot is the one slot where the program looks for k.
func chan4Slot(seed uint32, k turnrelayChanKey) uint32 {
	return chan4Hash(seed, k.ClientIp.W[3], k.ClientPort, k.ListenPort, k.Channel) & (chan4Slots - 1)
}

// chan4Table is the relay's side of the table of IPv4 channels: a channel
// can only be in the slot its key hashes to, so the program reads one
// cache line to find it. A channel whose slot is taken goes to the hash
// map instead. Its methods run under Offload.mu.
//
// The program reads a slot while it is written, so every write keeps what
// it can see consistent. A slot's channel number is 0 while it is free,
// and no ChannelData carries 0, so the program skips a free slot whatever
// the rest holds. A channel moves in with two writes: the whole entry with
// number 0, then the same with its number. A channel moves out by writing
// its entry with number 0. Between those, only the expiry and the learnt
// listener address change in place: a datagram racing such a write sees
// the channel, with one or the other expiry.
type chan4Table struct {
	seed    uint32
	entries chan4Store
	// owner is the channel in each taken slot.
	owner map[uint32]turnrelayChanKey
}

// chan4Store holds the table's entries: the chans4 map (*ebpf.Map; an
// interface so that a test can check every write).
type chan4Store interface {
	Lookup(key, valueOut any) error
	Put(key, value any) error
}

func newChan4Table(seed uint32, entries *ebpf.Map) *chan4Table {
	return &chan4Table{seed: seed, entries: entries, owner: map[uint32]turnrelayChanKey{}}
}

func newSeed() uint32 { return rand.Uint32() }

// is4 says whether k is an IPv4 channel (the table's).
func is4(k turnrelayChanKey) bool {
	return k.ClientIp.W[0] == 0 && k.ClientIp.W[1] == 0 && k.ClientIp.W[2] == addr16v4Prefix
}

// addr16v4Prefix is the third word of an IPv4-mapped address as addr16
// gives it.
var addr16v4Prefix = addr16(netip.MustParseAddr("::ffff:192.0.2.1")).W[2]

// entry4 is k and v as an entry of the table.
func entry4(k turnrelayChanKey, v turnrelayChanVal) turnrelayChan4 {
	return turnrelayChan4{
		ClientIp: k.ClientIp.W[3], ClientPort: k.ClientPort, ListenPort: k.ListenPort, Channel: k.Channel,
		Flags:  v.Flags,
		PeerIp: v.PeerIp.W[3], RelayIp: v.RelayIp.W[3], ListenIp: v.ListenIp.W[3],
		PeerPort: v.PeerPort, RelayPort: v.RelayPort,
		LocalPortMin: v.LocalPortMin, LocalPortMax: v.LocalPortMax,
		ExpiresNs: v.ExpiresNs,
	}
}

// put writes k's channel into its slot and says whether it did: false when
// k is not IPv4 or its slot holds another channel (then it belongs in the
// hash map). A learnt listener address is kept.
func (t *chan4Table) put(k turnrelayChanKey, v turnrelayChanVal) (bool, error) {
	if !is4(k) {
		return false, nil
	}
	slot := chan4Slot(t.seed, k)
	e := entry4(k, v)
	owner, taken := t.owner[slot]
	if taken && owner != k {
		return false, nil
	}
	if taken {
		var old turnrelayChan4
		if err := t.entries.Lookup(slot, &old); err != nil {
			return true, fmt.Errorf("chans4 map: %w", err)
		}
		if v.Flags&chanListenAny != 0 {
			e.ListenIp = old.ListenIp
		}
		refreshed := old
		refreshed.ExpiresNs = e.ExpiresNs
		if refreshed == e {
			return true, t.write(slot, e) // only the expiry changes: in place
		}
		// Anything else changed: out, then in again.
		old.Channel = 0
		if err := t.write(slot, old); err != nil {
			return true, err
		}
	}
	moving := e
	moving.Channel = 0
	if err := t.write(slot, moving); err != nil {
		return taken, err
	}
	t.owner[slot] = k
	return true, t.write(slot, e)
}

// delete takes k's channel out of its slot and says whether it was there.
func (t *chan4Table) delete(k turnrelayChanKey) (bool, error) {
	slot := chan4Slot(t.seed, k)
	if owner, ok := t.owner[slot]; !ok || owner != k {
		return false, nil
	}
	var e turnrelayChan4
	if err := t.entries.Lookup(slot, &e); err != nil {
		return true, fmt.Errorf("chans4 map: %w", err)
	}
	delete(t.owner, slot)
	e.Channel = 0
	return true, t.write(slot, e)
}

func (t *chan4Table) write(slot uint32, e turnrelayChan4) error {
	if err := t.entries.Put(slot, &e); err != nil {
		return fmt.Errorf("chans4 map: %w", err)
	}
	return nil
}

// lookup finds k's entry as the program does: in its slot, with its key.
func (t *chan4Table) lookup(k turnrelayChanKey) (turnrelayChan4, bool, error) {
	var e turnrelayChan4
	if err := t.entries.Lookup(chan4Slot(t.seed, k), &e); err != nil {
		return e, false, err
	}
	ok := e.ClientIp == k.ClientIp.W[3] && e.ClientPort == k.ClientPort && e.ListenPort == k.ListenPort && e.Channel == k.Channel
	return e, ok, nil
}
