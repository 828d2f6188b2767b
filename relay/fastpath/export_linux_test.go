//go:build linux

package fastpath

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
