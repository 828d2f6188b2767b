//go:build linux

package fastpath

import (
	"net/netip"
	"time"
)

// ChannelSlot is c's slot in o's table of channels of its family.
func ChannelSlot(o *Offload, c Channel) uint32 {
	k := chanKey(c)
	if is4(k) {
		return o.chans4.slot(k)
	}
	return o.chans6.slot(k)
}

// InSlotTable says whether o holds c in the table of its family (else in
// the hash map).
func InSlotTable(o *Offload, c Channel) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := chanKey(c)
	var owner turnrelayChanKey
	var ok bool
	if is4(k) {
		owner, ok = o.chans4.owner[o.chans4.slot(k)]
	} else {
		owner, ok = o.chans6.owner[o.chans6.slot(k)]
	}
	return ok && owner == k
}

// LearntListener says whether the program learnt a as c's listener address
// (for a listener on all addresses), in c's slot or the hash map. An IPv6
// slot holds the address's tag only.
func LearntListener(o *Offload, c Channel, a netip.Addr) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	k, want := chanKey(c), addr16(a)
	if e, ok, _ := o.chans4.lookup(k); ok {
		return [4]uint32{0, 0, addr16v4Prefix, e.ListenIp} == want.W
	}
	if e, ok, _ := o.chans6.lookup(k); ok {
		return e.ListenTag == addrTag(o.chans6.seed, want)
	}
	var v turnrelayChanVal
	return o.objs.Channels.Lookup(&k, &v) == nil && v.ListenIp == want
}

// SetHopRefresh sets how often the generation of kept hops rises without
// a notification, for the Offloads loaded from now on; restore puts it back.
func SetHopRefresh(d time.Duration) (restore func()) {
	old := hopRefresh
	hopRefresh = d
	return func() { hopRefresh = old }
}

// KeptHopsTo counts the next hops to dst that the program keeps, on any
// CPU, under the current generation.
func KeptHopsTo(o *Offload, dst netip.Addr) (int, error) {
	var gen uint64
	if err := o.objs.HopGen.Lookup(uint32(0), &gen); err != nil {
		return 0, err
	}
	want := addr16(dst)
	n := 0
	var hops []turnrelayHop
	for slot := range uint32(o.objs.Hops.MaxEntries()) {
		if err := o.objs.Hops.Lookup(slot, &hops); err != nil {
			return 0, err
		}
		for _, h := range hops {
			if gen != 0 && h.Gen == gen && h.Dst == want {
				n++
			}
		}
	}
	return n, nil
}

// StopHopRaises stops o raising the generation of kept hops: they hold
// until o closes, whatever changes.
func StopHopRaises(o *Offload) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hops.close()
	o.hops = nil
}
