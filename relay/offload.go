package relay

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/fastpath"
)

// The fast path (relay.yaml fastPath, package fastpath) relays bound UDP
// channels in the kernel. This file keeps the kernel's table in step with
// pion's channels: a channel enters it from OnChannelCreated (so only after
// authentication, the peer policy and the quotas), is refreshed when pion
// admits a refreshing ChannelBind or CreatePermission, loses its
// peer-to-client half with its permission, and leaves with its channel or
// allocation, or when a reload's peer policy no longer allows its peer.

// Lifetimes of channels and permissions (RFC 8656 sections 9 and 12). They
// are given to pion too, so the kernel's expiries match pion's timers.
const (
	channelLifetime    = 10 * time.Minute
	permissionLifetime = 5 * time.Minute
)

// offloadPollInterval is how often the kernel's counters are added to the
// relay's metrics.
const offloadPollInterval = time.Second

// offloader owns the loaded program and the channels written into it.
type offloader struct {
	kernel *fastpath.Offload
	log    *slog.Logger
	// udpPorts are the plain UDP listeners' ports: only their clients send
	// ChannelData the program can read (DTLS is encrypted).
	udpPorts map[uint16]bool

	mu sync.Mutex
	// closed is set when the program is detached: pion may still report
	// channels of allocations it closes after that.
	closed   bool
	channels map[allocKey]map[uint16]*fastpath.Channel
	last     fastpath.Counters // counters already added to the metrics
}

// startFastPath loads the program when relay.yaml enables it. Failing to
// load is not fatal: the relay says why and relays in userspace.
func (r *Relay) startFastPath(ctx context.Context) {
	fp := r.cfg.FastPath
	if !fp.Enabled {
		return
	}
	interfaces := fp.Interfaces
	if len(interfaces) == 0 {
		interfaces = defaultFastPathInterfaces(r.current().addrs.bind)
	}
	kernel, err := fastpath.Load(interfaces)
	if err != nil {
		r.fastPathReason = err.Error()
		r.log.Warn("fast path unavailable, relaying in userspace", "reason", err.Error(), "interfaces", interfaces)
		return
	}
	o := &offloader{kernel: kernel, log: r.log, udpPorts: map[uint16]bool{}, channels: map[allocKey]map[uint16]*fastpath.Channel{}}
	for _, l := range r.cfg.Listeners {
		if l.Protocol == config.UDP {
			o.udpPorts[uint16(l.Port)] = true
		}
	}
	r.offload = o
	r.metrics.fastPathActive.Set(1)
	r.log.Info("fast path active", "interfaces", kernel.Interfaces())
	go r.pollFastPath(ctx)
}

// stopFastPath detaches the program; what is left relays in userspace.
func (r *Relay) stopFastPath() {
	if r.offload == nil {
		return
	}
	r.addFastPathCounters()
	o := r.offload
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	if err := o.kernel.Close(); err != nil {
		r.log.Warn("closing the fast path", "error", err.Error())
	}
	r.metrics.fastPathActive.Set(0)
}

// defaultFastPathInterfaces are lo and the interfaces holding a bind
// address, or every interface that is up when the relay binds all addresses;
// of those, the ones the program can work on (tunnels are left out rather
// than failing the whole fast path).
func defaultFastPathInterfaces(bind []netip.Addr) []string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return []string{"lo"}
	}
	var names []string
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || !fastpath.Attachable(iface) {
			continue
		}
		addrs, _ := iface.Addrs()
		holds := iface.Flags&net.FlagLoopback != 0 || (len(bind) == 0 && len(addrs) > 0)
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && slices.Contains(bind, p.Addr()) {
				holds = true
			}
		}
		if holds {
			names = append(names, iface.Name)
		}
	}
	return names
}

// pollFastPath adds the kernel's counters to the metrics every second.
func (r *Relay) pollFastPath(ctx context.Context) {
	t := time.NewTicker(offloadPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.addFastPathCounters()
		}
	}
}

func (r *Relay) addFastPathCounters() {
	o := r.offload
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	c, err := o.kernel.Counters()
	if err != nil {
		o.mu.Unlock()
		r.log.Warn("reading the fast path's counters", "error", err.Error())
		return
	}
	d := c.Sub(o.last)
	o.last = c
	o.mu.Unlock()
	for dir, s := range map[string]fastpath.Stat{dirToPeer: d.ToPeer, dirFromPeer: d.FromPeer} {
		r.traffic[dir+"/udp"].packets.Add(float64(s.Packets))
		r.traffic[dir+"/udp"].bytes.Add(float64(s.Bytes))
		r.metrics.fastPathPackets.WithLabelValues(dir).Add(float64(s.Packets))
	}
	r.bandwidthDrop.Add(float64(d.DroppedToPeer.Packets + d.DroppedFromPeer.Packets))
}

// withOffload runs fn with the offloader locked, unless the fast path is
// off or already detached.
func (r *Relay) withOffload(fn func(o *offloader)) {
	o := r.offload
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		fn(o)
	}
}

// channelCreated offloads a channel pion has just bound.
func (r *Relay) channelCreated(k allocKey, listener, relayAddr, peer net.Addr, number uint16) {
	o := r.offload
	if o == nil || k.network != "udp" || !o.udpPorts[k.port] {
		return
	}
	_, peerAP, ok1 := addrPort(peer)
	_, listenAP, ok2 := addrPort(listener)
	relayNet, relayAP, ok3 := addrPort(relayAddr)
	if !ok1 || !ok2 || !ok3 || relayNet != "udp" {
		return
	}
	st := r.current()
	bind, _, err := st.addrs.forNetwork("udp4")
	if err != nil {
		return
	}
	if !listenAP.Addr().Is4() { // a dual-stack wildcard listener: "[::]"
		listenAP = netip.AddrPortFrom(netip.IPv4Unspecified(), listenAP.Port())
	}
	now := timeNow()
	c := &fastpath.Channel{
		Client: k.client, Listener: listenAP, Number: number,
		Peer: peerAP, Relay: netip.AddrPortFrom(bind, relayAP.Port()),
		ChannelExpires:    now.Add(channelLifetime),
		PermissionExpires: now.Add(permissionLifetime),
		BytesPerSecond:    st.quotas.BandwidthPerAllocation,
	}
	if !c.Offloadable() {
		return
	}
	if ok, _ := st.policy.checkPort(peerAP); !ok {
		return // a node port peers may not use: userspace drops its packets
	}
	r.withOffload(func(o *offloader) {
		c.ClientLocal, c.PeerLocal = st.onHost(k.client.Addr()), st.onHost(peerAP.Addr())
		if err := o.kernel.Put(*c); err != nil {
			o.log.Warn("fast path: channel not offloaded", "error", err.Error(), "client", k.client.String(), "peer", peerAP.String())
			return
		}
		if o.channels[k] == nil {
			o.channels[k] = map[uint16]*fastpath.Channel{}
		}
		o.channels[k][number] = c
	})
}

// channelDeleted takes a channel out of the kernel.
func (r *Relay) channelDeleted(k allocKey, number uint16) {
	r.withOffload(func(o *offloader) {
		if c := o.channels[k][number]; c != nil {
			o.remove(k, c)
		}
	})
}

// remove deletes c from the kernel and the table; o.mu is held. The last
// channel of an allocation takes its bandwidth buckets with it.
func (o *offloader) remove(k allocKey, c *fastpath.Channel) {
	if err := o.kernel.Delete(*c); err != nil {
		o.log.Warn("fast path: deleting a channel", "error", err.Error())
	}
	delete(o.channels[k], c.Number)
	if len(o.channels[k]) == 0 {
		delete(o.channels, k)
		if err := o.kernel.DeleteQuota(c.Relay.Port()); err != nil {
			o.log.Warn("fast path: deleting a bandwidth quota", "error", err.Error())
		}
	}
}

// permissionDeleted ends the peer-to-client half of the allocation's
// channels to peer: pion relays nothing from a peer without a permission.
func (r *Relay) permissionDeleted(k allocKey, peer netip.Addr) {
	r.updatePeer(k, peer, func(c *fastpath.Channel) { c.PermissionExpires = time.Time{} })
}

// permissionAdmitted extends the allocation's channels to peer after pion's
// permission handler admitted a CreatePermission or ChannelBind (channel is
// the ChannelBind's number, -1 for CreatePermission).
func (r *Relay) permissionAdmitted(k allocKey, peer netip.Addr, channel int) {
	now := timeNow()
	r.updatePeer(k, peer, func(c *fastpath.Channel) {
		c.PermissionExpires = now.Add(permissionLifetime)
		if int(c.Number) == channel {
			c.ChannelExpires = now.Add(channelLifetime)
		}
	})
}

func (r *Relay) updatePeer(k allocKey, peer netip.Addr, update func(*fastpath.Channel)) {
	r.withOffload(func(o *offloader) {
		for _, c := range o.channels[k] {
			if canonicalPeer(c.Peer.Addr()) != peer {
				continue
			}
			update(c)
			if err := o.kernel.Put(*c); err != nil {
				o.log.Warn("fast path: updating a channel", "error", err.Error())
			}
		}
	})
}

// recheckPeers removes the channels whose peers the (reloaded) peer policy
// denies.
func (r *Relay) recheckPeers(policy *peerPolicy) {
	r.withOffload(func(o *offloader) {
		removed := 0
		for k, chans := range o.channels {
			for _, c := range chans {
				if ok, _ := policy.checkPort(c.Peer); !ok {
					o.remove(k, c)
					removed++
				}
			}
		}
		if removed > 0 {
			o.log.Info("fast path: channels to peers the new peer policy denies were removed", "channels", removed)
		}
	})
}

// fastPathStatus is the fast path's part of /status; nil when disabled.
func (r *Relay) fastPathStatus() *config.FastPathStatus {
	if !r.cfg.FastPath.Enabled {
		return nil
	}
	o := r.offload
	if o == nil {
		return &config.FastPathStatus{Reason: r.fastPathReason}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return &config.FastPathStatus{Reason: "stopped"}
	}
	n := 0
	for _, chans := range o.channels {
		n += len(chans)
	}
	return &config.FastPathStatus{Active: true, Interfaces: o.kernel.Interfaces(), Channels: n}
}
