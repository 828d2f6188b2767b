//go:build linux

package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Indexes of the counters map, flags of the map entries and directions of
// the buckets (turnrelay.c).
const (
	statToPeer = iota
	statFromPeer
	statDroppedToPeer
	statDroppedFromPeer
	statCount

	chanPeerLocal = 1
	chanListenAny = 2
	chanQuota     = 4
	chanRelayAny  = 8 // chan6 only (entry6)

	allocUsed        = 1
	allocV6          = 2
	allocClientLocal = 4
	allocQuota       = 8

	dirToPeer   = 0
	dirFromPeer = 1
)

// Offload is the loaded and attached program.
type Offload struct {
	// mu orders Put, Delete and DeleteQuota: they read, change and write
	// back an allocation's entry.
	mu         sync.Mutex
	objs       turnrelayObjects
	chans4     *slotTable[turnrelayChan4] // the tables of channels, by family
	chans6     *slotTable[turnrelayChan6]
	hops       *hopWatch // nil: no next hop is kept
	links      []link.Link
	interfaces []string
}

// Load loads the program and attaches it to the ingress of each interface
// (TCX: Linux 6.6 or later; CAP_BPF and CAP_NET_ADMIN). It fails as a whole:
// either every interface has the program or none does.
func Load(interfaces []string) (*Offload, error) {
	if len(interfaces) == 0 {
		return nil, errors.New("no interfaces to attach to")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK: %w", err)
	}
	o := &Offload{}
	spec, err := loadTurnrelay()
	if err != nil {
		return nil, fmt.Errorf("loading the BPF program: %w", err)
	}
	seed := newSeed()
	if err := spec.Variables["slot_seed"].Set(seed); err != nil {
		return nil, fmt.Errorf("loading the BPF program: %w", err)
	}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		return nil, fmt.Errorf("loading the BPF program: %w", err)
	}
	o.chans4, o.chans6 = newSlotTables(seed, o.objs.Chans4, o.objs.Chans6)
	o.hops = watchHops(o.objs.HopGen)
	for _, name := range interfaces {
		if err := o.attach(name); err != nil {
			o.Close()
			return nil, err
		}
	}
	return o, nil
}

func (o *Offload) attach(name string) error {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if !Attachable(*iface) {
		return fmt.Errorf("interface %s is not Ethernet or loopback", name)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: iface.Index, Program: o.objs.Turnrelay, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attaching to %s ingress (TCX needs Linux 6.6+): %w", name, err)
	}
	o.links = append(o.links, l)
	o.interfaces = append(o.interfaces, name)
	return nil
}

// Interfaces are the interfaces the program is attached to.
func (o *Offload) Interfaces() []string { return o.interfaces }

// Close detaches the program and frees its maps; the kernel stops relaying.
func (o *Offload) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	o.hops.close()
	o.hops = nil
	errs = append(errs, o.objs.Close())
	return errors.Join(errs...)
}

// Put writes (or refreshes) a channel in both directions: its client-side
// entry, and its peer slot in the allocation's entry at its relay port. An
// address the program learnt for a listener on all addresses is kept, and
// so are the tokens of a bandwidth bucket whose rate did not change.
func (o *Offload) Put(c Channel) error {
	if !c.Offloadable() {
		return fmt.Errorf("channel %#x from %v to %v: not offloadable (mixed address families, or a local peer outside %d-%d)",
			c.Number, c.Client, c.Peer, c.LocalPeerPorts.Min, c.LocalPeerPorts.Max)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	index := uint32(c.Relay.Port())
	var a turnrelayAlloc
	if err := o.objs.Allocs.Lookup(index, &a); err != nil {
		return fmt.Errorf("allocs map: %w", err)
	}
	if !ownedBy(a, c) {
		if a.Flags&allocUsed != 0 && !expired(a) {
			return fmt.Errorf("channel %#x from %v: relay port %d holds another allocation's channels", c.Number, c.Client, c.Relay.Port())
		}
		a = newAlloc(c)
	}
	slot, ok := pickSlot(&a, c)
	if !ok {
		return fmt.Errorf("channel %#x from %v: the allocation on relay port %d has %d channels in the kernel already", c.Number, c.Client, c.Relay.Port(), len(a.Peers))
	}
	a.Peers[slot] = turnrelayPeerSlot{PeerIp: addr16(c.Peer.Addr()), PeerPort: port(c.Peer.Port()), Channel: c.Number, ExpiresNs: monotonicNs(c.PermissionExpires)}
	if err := o.putQuota(c); err != nil {
		return err
	}
	if err := o.objs.Allocs.Put(index, &a); err != nil {
		return fmt.Errorf("allocs map: %w", err)
	}
	return o.putChannel(channelEntry(c))
}

// channelTable is a table of channels of one family (slotTable).
type channelTable interface {
	put(turnrelayChanKey, turnrelayChanVal) (bool, error)
	delete(turnrelayChanKey) (bool, error)
}

// slotTable is the table of k's family.
func (o *Offload) slotTable(k turnrelayChanKey) channelTable {
	if is4(k) {
		return o.chans4
	}
	return o.chans6
}

// putChannel writes a channel's client-side entry: into the table of its
// family unless it is in the hash map already or the table has no place
// for it (slotTable.put), else into the hash map.
func (o *Offload) putChannel(ck turnrelayChanKey, cv turnrelayChanVal) error {
	var old turnrelayChanVal
	err := o.objs.Channels.Lookup(&ck, &old)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("channels map: %w", err)
	}
	hashed := err == nil
	if !hashed {
		if ok, err := o.slotTable(ck).put(ck, cv); ok || err != nil {
			return err
		}
	}
	if hashed && cv.Flags&chanListenAny != 0 {
		cv.ListenIp = old.ListenIp
	}
	if err := o.objs.Channels.Put(&ck, &cv); err != nil {
		return fmt.Errorf("channels map: %w", err)
	}
	return nil
}

// putQuota starts the allocation's bandwidth buckets, full, unless they
// already run at this rate.
func (o *Offload) putQuota(c Channel) error {
	if !hasQuota(c) {
		return nil
	}
	for _, dir := range []uint32{dirToPeer, dirFromPeer} {
		index := bucketIndex(c.Relay.Port(), dir)
		var b turnrelayBucket
		if err := o.objs.Buckets.Lookup(index, &b); err != nil {
			return fmt.Errorf("buckets map: %w", err)
		}
		if b.Rate == uint64(c.BytesPerSecond) {
			continue
		}
		b = turnrelayBucket{Rate: uint64(c.BytesPerSecond), Burst: burstFor(c.BytesPerSecond), LastNs: monotonicNs(time.Now())}
		b.Tokens = b.Burst
		if err := o.objs.Buckets.Update(index, &b, ebpf.UpdateLock); err != nil {
			return fmt.Errorf("buckets map: %w", err)
		}
	}
	return nil
}

// Delete removes a channel in both directions; the allocation's entry goes
// with its last channel. Missing entries are fine.
func (o *Offload) Delete(c Channel) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	ck, _ := channelEntry(c)
	var errs []error
	if ok, err := o.slotTable(ck).delete(ck); ok {
		errs = append(errs, err)
	} else {
		errs = append(errs, ignoreMissing(o.objs.Channels.Delete(&ck)))
	}
	index := uint32(c.Relay.Port())
	var a turnrelayAlloc
	if err := o.objs.Allocs.Lookup(index, &a); err != nil || !ownedBy(a, c) {
		return errors.Join(append(errs, err)...)
	}
	used := 0
	for i, s := range a.Peers {
		if s.Channel == c.Number && s.PeerPort == port(c.Peer.Port()) && s.PeerIp == addr16(c.Peer.Addr()) {
			a.Peers[i] = turnrelayPeerSlot{}
		} else if a.Peers[i].Channel != 0 {
			used++
		}
	}
	if used == 0 {
		a = turnrelayAlloc{}
	}
	return errors.Join(append(errs, o.objs.Allocs.Put(index, &a))...)
}

// DeleteQuota removes the bandwidth buckets of the allocation on relayPort.
func (o *Offload) DeleteQuota(relayPort uint16) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var errs []error
	for _, dir := range []uint32{dirToPeer, dirFromPeer} {
		errs = append(errs, o.objs.Buckets.Update(bucketIndex(relayPort, dir), &turnrelayBucket{}, ebpf.UpdateLock))
	}
	return errors.Join(errs...)
}

// Counters sums the per-CPU counters.
func (o *Offload) Counters() (Counters, error) {
	o.mu.Lock() // not while Close closes the maps
	defer o.mu.Unlock()
	var c Counters
	for i, dst := range []*Stat{&c.ToPeer, &c.FromPeer, &c.DroppedToPeer, &c.DroppedFromPeer} {
		var perCPU []turnrelayStats
		if err := o.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("counters map: %w", err)
		}
		for _, s := range perCPU {
			dst.Packets += s.Packets
			dst.Bytes += s.Bytes
		}
	}
	return c, nil
}

// chanKey is c's client-side key.
func chanKey(c Channel) turnrelayChanKey {
	return turnrelayChanKey{
		ClientIp:   addr16(c.Client.Addr()),
		ClientPort: port(c.Client.Port()),
		ListenPort: port(c.Listener.Port()),
		Channel:    c.Number,
	}
}

func channelEntry(c Channel) (turnrelayChanKey, turnrelayChanVal) {
	k := chanKey(c)
	v := turnrelayChanVal{
		PeerIp:       addr16(c.Peer.Addr()),
		RelayIp:      addr16(c.Relay.Addr()),
		ListenIp:     addr16(c.Listener.Addr()),
		PeerPort:     port(c.Peer.Port()),
		RelayPort:    port(c.Relay.Port()),
		LocalPortMin: c.LocalPeerPorts.Min,
		LocalPortMax: c.LocalPeerPorts.Max,
		ExpiresNs:    monotonicNs(c.ChannelExpires),
	}
	if c.PeerLocal {
		v.Flags |= chanPeerLocal
	}
	if c.Listener.Addr().IsUnspecified() {
		v.Flags |= chanListenAny
	}
	if hasQuota(c) {
		v.Flags |= chanQuota
	}
	return k, v
}

// newAlloc is the entry of c's allocation, without peers.
func newAlloc(c Channel) turnrelayAlloc {
	a := turnrelayAlloc{
		ClientIp:   addr16(c.Client.Addr()),
		RelayIp:    addr16(c.Relay.Addr()),
		ListenIp:   addr16(c.Listener.Addr()), // unspecified: zero, until the program learns it
		ClientPort: port(c.Client.Port()),
		ListenPort: port(c.Listener.Port()),
		Flags:      allocUsed,
	}
	if !c.Client.Addr().Unmap().Is4() {
		a.Flags |= allocV6
	}
	if c.ClientLocal {
		a.Flags |= allocClientLocal
	}
	if hasQuota(c) {
		a.Flags |= allocQuota
	}
	return a
}

// ownedBy says whether a is the entry of c's allocation: the same client,
// listener port and relay address.
func ownedBy(a turnrelayAlloc, c Channel) bool {
	n := newAlloc(c)
	return a.Flags&allocUsed != 0 && a.ClientIp == n.ClientIp && a.ClientPort == n.ClientPort &&
		a.ListenPort == n.ListenPort && a.RelayIp == n.RelayIp && a.Flags&allocV6 == n.Flags&allocV6
}

// expired says whether every peer of a has lost its permission: the entry
// is left over (its allocation's end was missed) and its port may be reused.
func expired(a turnrelayAlloc) bool {
	now := monotonicNs(time.Now())
	for _, s := range a.Peers {
		if s.Channel != 0 && s.ExpiresNs >= now {
			return false
		}
	}
	return true
}

// pickSlot returns the slot of a for c: the one of its channel or peer, or
// else a free or expired one.
func pickSlot(a *turnrelayAlloc, c Channel) (int, bool) {
	peerIP, peerPort := addr16(c.Peer.Addr()), port(c.Peer.Port())
	for i, s := range a.Peers {
		if s.Channel == c.Number || (s.PeerIp == peerIP && s.PeerPort == peerPort) {
			return i, true
		}
	}
	now := monotonicNs(time.Now())
	for i, s := range a.Peers {
		if s.Channel == 0 || s.ExpiresNs < now {
			return i, true
		}
	}
	return 0, false
}

func hasQuota(c Channel) bool {
	return c.BytesPerSecond > 0 && c.BytesPerSecond <= maxRate
}

func bucketIndex(relayPort uint16, dir uint32) uint32 {
	return uint32(relayPort)*2 + dir
}

// addr16 gives an address as the program reads it from packets: IPv6, or
// IPv4-mapped IPv6, in network byte order (the maps hold it as it is in
// memory); all zero when unspecified.
func addr16(a netip.Addr) turnrelayAddr {
	var out turnrelayAddr
	if a.IsUnspecified() || !a.IsValid() {
		return out
	}
	b := a.Unmap().As16() // an IPv4 address comes out IPv4-mapped
	for i := range out.W {
		out.W[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return out
}

// port gives a port in network byte order, as the program reads it.
func port(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// monotonicNs converts a wall-clock time to the kernel's CLOCK_MONOTONIC
// nanoseconds (bpf_ktime_get_ns), through the time left until t.
func monotonicNs(t time.Time) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	ns := ts.Nano() + int64(time.Until(t))
	return uint64(max(ns, 0))
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}
