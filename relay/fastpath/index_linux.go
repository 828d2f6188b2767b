//go:build linux

package fastpath

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Sizes of the dense table of IPv4 channels and its index (turnrelay.c).
const (
	indexLines   = 8192
	indexSlots   = 16
	denseEntries = 65536
)

// indexHash is the program's index_hash: the words of a channel's key as
// they are in the map (addr16, port), mixed with the seed.
func indexHash(seed, clientIP uint32, clientPort, listenPort, channel uint16) uint32 {
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

// indexPlace is where a key's slot goes: its index line and tag.
func indexPlace(seed uint32, k turnrelayChanKey) (line, tag uint32) {
	h := indexHash(seed, k.ClientIp.W[3], k.ClientPort, k.ListenPort, k.Channel)
	return h & (indexLines - 1), h>>16 | 1
}

// dense is the relay's side of the dense table of IPv4 channels: which
// entries are taken and by whom. The index lines themselves live only in
// the map (the program does not write them): Put and Delete read the line
// they change. Its methods run under Offload.mu.
type dense struct {
	seed    uint32
	entries *ebpf.Map // chans4
	index   *ebpf.Map // index4
	// at is the entry of each channel in the table; the other IPv4
	// channels are in the hash map.
	at map[turnrelayChanKey]uint32
	// used marks the taken entries; lowFree is at most the lowest free
	// one. The lowest free entry is handed out, so that the channels in
	// use lie close together.
	used    []bool
	lowFree uint32
}

func newDense(seed uint32, entries, index *ebpf.Map) *dense {
	return &dense{seed: seed, entries: entries, index: index, at: map[turnrelayChanKey]uint32{}, used: make([]bool, denseEntries)}
}

func newSeed() uint32 { return rand.Uint32() }

// is4 says whether k is an IPv4 channel (the table's).
func is4(k turnrelayChanKey) bool {
	return k.ClientIp.W[0] == 0 && k.ClientIp.W[1] == 0 && k.ClientIp.W[2] == addr16v4Prefix
}

// addr16v4Prefix is the third word of an IPv4-mapped address as addr16
// gives it.
var addr16v4Prefix = addr16(netip.MustParseAddr("::ffff:192.0.2.1")).W[2]

// entry4 is k and v as a dense entry.
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

// put writes k's channel into the table and says whether it did: false
// when k is not IPv4, or its index line is full or holds its tag already
// (then it belongs in the hash map). A learnt listener address is kept.
func (d *dense) put(k turnrelayChanKey, v turnrelayChanVal) (bool, error) {
	if !is4(k) {
		return false, nil
	}
	e := entry4(k, v)
	if i, ok := d.at[k]; ok {
		if v.Flags&chanListenAny != 0 {
			var old turnrelayChan4
			if err := d.entries.Lookup(i, &old); err != nil {
				return true, fmt.Errorf("chans4 map: %w", err)
			}
			e.ListenIp = old.ListenIp
		}
		if err := d.entries.Put(i, &e); err != nil {
			return true, fmt.Errorf("chans4 map: %w", err)
		}
		return true, nil
	}
	lineIndex, tag := indexPlace(d.seed, k)
	var line turnrelayIndexLine
	if err := d.index.Lookup(lineIndex, &line); err != nil {
		return false, fmt.Errorf("index4 map: %w", err)
	}
	free := -1
	for s, slot := range line.Slot {
		if slot>>16 == tag {
			return false, nil
		}
		if slot == 0 && free < 0 {
			free = s
		}
	}
	if free < 0 {
		return false, nil
	}
	i, ok := d.take()
	if !ok {
		return false, nil
	}
	// The entry first, then the slot that leads to it.
	if err := d.entries.Put(i, &e); err != nil {
		d.release(i)
		return false, fmt.Errorf("chans4 map: %w", err)
	}
	line.Slot[free] = tag<<16 | i
	if err := d.index.Put(lineIndex, &line); err != nil {
		d.release(i)
		return false, errors.Join(fmt.Errorf("index4 map: %w", err), d.entries.Put(i, &turnrelayChan4{}))
	}
	d.at[k] = i
	return true, nil
}

// delete removes k's channel from the table and says whether it was there.
func (d *dense) delete(k turnrelayChanKey) (bool, error) {
	i, ok := d.at[k]
	if !ok {
		return false, nil
	}
	lineIndex, tag := indexPlace(d.seed, k)
	var line turnrelayIndexLine
	if err := d.index.Lookup(lineIndex, &line); err != nil {
		return true, fmt.Errorf("index4 map: %w", err)
	}
	for s, slot := range line.Slot {
		if slot == tag<<16|i {
			line.Slot[s] = 0
		}
	}
	// The slot first, then the entry.
	if err := d.index.Put(lineIndex, &line); err != nil {
		return true, fmt.Errorf("index4 map: %w", err)
	}
	delete(d.at, k)
	d.release(i)
	if err := d.entries.Put(i, &turnrelayChan4{}); err != nil {
		return true, fmt.Errorf("chans4 map: %w", err)
	}
	return true, nil
}

// lookup finds k's entry as the program does: through its index line.
func (d *dense) lookup(k turnrelayChanKey) (turnrelayChan4, uint32, bool, error) {
	lineIndex, tag := indexPlace(d.seed, k)
	var line turnrelayIndexLine
	if err := d.index.Lookup(lineIndex, &line); err != nil {
		return turnrelayChan4{}, 0, false, err
	}
	for _, slot := range line.Slot {
		if slot>>16 != tag {
			continue
		}
		i := slot & 0xffff
		var e turnrelayChan4
		if err := d.entries.Lookup(i, &e); err != nil {
			return turnrelayChan4{}, 0, false, err
		}
		ok := e.ClientIp == k.ClientIp.W[3] && e.ClientPort == k.ClientPort && e.ListenPort == k.ListenPort && e.Channel == k.Channel
		return e, i, ok, nil
	}
	return turnrelayChan4{}, 0, false, nil
}

func (d *dense) take() (uint32, bool) {
	for i := d.lowFree; i < denseEntries; i++ {
		if !d.used[i] {
			d.used[i] = true
			d.lowFree = i + 1
			return i, true
		}
	}
	d.lowFree = denseEntries
	return 0, false
}

func (d *dense) release(i uint32) {
	d.used[i] = false
	d.lowFree = min(d.lowFree, i)
}
