//go:build linux

package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Indexes of the counters map and flags of its entries (turnrelay.c).
const (
	statToPeer = iota
	statFromPeer
	statDroppedToPeer
	statDroppedFromPeer
	statCount

	destLocal = 1

	dirToPeer   = 0
	dirFromPeer = 1
)

// Offload is the loaded and attached program.
type Offload struct {
	objs       turnrelayObjects
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
	if err := loadTurnrelayObjects(&o.objs, nil); err != nil {
		return nil, fmt.Errorf("loading the BPF program: %w", err)
	}
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
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	errs = append(errs, o.objs.Close())
	return errors.Join(errs...)
}

// Put writes (or refreshes) a channel in both directions. A peer-side
// listener address the program learnt is kept.
func (o *Offload) Put(c Channel) error {
	if !c.Offloadable() {
		return fmt.Errorf("channel %#x from %v to %v: only IPv4 channels are offloaded", c.Number, c.Client, c.Peer)
	}
	ck, cv := channelEntry(c)
	pk, pv := peerEntry(c)
	var old turnrelayPeerVal
	if pv.ListenIp == 0 && o.objs.Peers.Lookup(&pk, &old) == nil && old.ClientIp == pv.ClientIp && old.ClientPort == pv.ClientPort {
		pv.ListenIp = old.ListenIp
	}
	if err := o.objs.Channels.Put(&ck, &cv); err != nil {
		return fmt.Errorf("channels map: %w", err)
	}
	if err := o.objs.Peers.Put(&pk, &pv); err != nil {
		return fmt.Errorf("peers map: %w", err)
	}
	if c.BytesPerSecond > 0 && c.BytesPerSecond <= maxRate {
		for _, dir := range []uint16{dirToPeer, dirFromPeer} {
			b := turnrelayBucket{Rate: uint64(c.BytesPerSecond), Burst: burstFor(c.BytesPerSecond), LastNs: monotonicNs(time.Now())}
			b.Tokens = b.Burst
			err := o.objs.Buckets.Update(&turnrelayBucketKey{RelayPort: c.Relay.Port(), Direction: dir}, &b, ebpf.UpdateNoExist)
			if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
				return fmt.Errorf("buckets map: %w", err)
			}
		}
	}
	return nil
}

// Delete removes a channel in both directions. Missing entries are fine.
func (o *Offload) Delete(c Channel) error {
	ck, _ := channelEntry(c)
	pk, _ := peerEntry(c)
	return errors.Join(ignoreMissing(o.objs.Channels.Delete(&ck)), ignoreMissing(o.objs.Peers.Delete(&pk)))
}

// DeleteQuota removes the bandwidth buckets of the allocation on relayPort.
func (o *Offload) DeleteQuota(relayPort uint16) error {
	var errs []error
	for _, dir := range []uint16{dirToPeer, dirFromPeer} {
		errs = append(errs, ignoreMissing(o.objs.Buckets.Delete(&turnrelayBucketKey{RelayPort: relayPort, Direction: dir})))
	}
	return errors.Join(errs...)
}

// Counters sums the per-CPU counters.
func (o *Offload) Counters() (Counters, error) {
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

func channelEntry(c Channel) (turnrelayChanKey, turnrelayChanVal) {
	k := turnrelayChanKey{
		ClientIp:   ip4(c.Client.Addr()),
		ClientPort: port(c.Client.Port()),
		ListenPort: port(c.Listener.Port()),
		Channel:    c.Number,
	}
	v := turnrelayChanVal{
		PeerIp:    ip4(c.Peer.Addr()),
		RelayIp:   ip4(c.Relay.Addr()),
		ListenIp:  ip4(c.Listener.Addr()),
		PeerPort:  port(c.Peer.Port()),
		RelayPort: port(c.Relay.Port()),
		ExpiresNs: monotonicNs(c.ChannelExpires),
	}
	if c.PeerLocal {
		v.Flags |= destLocal
	}
	return k, v
}

func peerEntry(c Channel) (turnrelayPeerKey, turnrelayPeerVal) {
	k := turnrelayPeerKey{
		PeerIp:    ip4(c.Peer.Addr()),
		PeerPort:  port(c.Peer.Port()),
		RelayPort: port(c.Relay.Port()),
	}
	v := turnrelayPeerVal{
		ClientIp:   ip4(c.Client.Addr()),
		RelayIp:    ip4(c.Relay.Addr()),
		ListenIp:   ip4(c.Listener.Addr()),
		ClientPort: port(c.Client.Port()),
		ListenPort: port(c.Listener.Port()),
		Channel:    c.Number,
		ExpiresNs:  monotonicNs(c.PermissionExpires),
	}
	if c.ClientLocal {
		v.Flags |= destLocal
	}
	return k, v
}

// ip4 and port give an address and a port in network byte order, as the
// program reads them from packets (the maps hold them as they are in memory).
func ip4(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.NativeEndian.Uint32(b[:])
}

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
