//go:build linux

package fastpath

// IndexPlace is where c's client-side entry goes in o's index of IPv4
// channels: its line and tag.
func IndexPlace(o *Offload, c Channel) (line, tag uint32) {
	return indexPlace(o.dense.seed, chanKey(c))
}

// Places returns where channels like c, but with other client and
// listener ports and numbers, go in o's index.
func Places(o *Offload, c Channel) func(clientPort, listenPort, number uint16) (line, tag uint32) {
	k := chanKey(c)
	return func(clientPort, listenPort, number uint16) (uint32, uint32) {
		k.ClientPort, k.ListenPort, k.Channel = port(clientPort), port(listenPort), number
		return indexPlace(o.dense.seed, k)
	}
}

// InDenseTable says whether o holds c in the dense table (else in the hash
// map).
func InDenseTable(o *Offload, c Channel) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.dense.at[chanKey(c)]
	return ok
}

// IndexSlots is the number of slots of an index line.
const IndexSlots = indexSlots
