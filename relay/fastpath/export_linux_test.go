//go:build linux

package fastpath

// Chan4Slot is c's slot in o's table of IPv4 channels.
func Chan4Slot(o *Offload, c Channel) uint32 {
	return chan4Slot(o.chans4.seed, chanKey(c))
}

// InChan4Table says whether o holds c in the table of IPv4 channels (else
// in the hash map).
func InChan4Table(o *Offload, c Channel) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := chanKey(c)
	owner, ok := o.chans4.owner[chan4Slot(o.chans4.seed, k)]
	return ok && owner == k
}
