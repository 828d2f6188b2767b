package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/relay/fastpath/wire"
)

// The fast path (relay.yaml fastPath, package fastpath) relays bound UDP
// channels in the kernel. This file keeps the kernel's table in step with
// pion's channels: a channel enters it from OnChannelCreated (so only after
// authentication, the peer policy and the quotas), is refreshed when pion
// admits a refreshing ChannelBind or CreatePermission, loses its
// peer-to-client half with its permission, and leaves with its channel or
// allocation, or when a reload's peer policy no longer allows its peer.
// A program the relay loaded is written at once; the fast-path agent's is
// written through a queue, so that no handler waits for the agent.

// Lifetimes of channels and permissions (RFC 8656 sections 9 and 12). They
// are given to pion too, so the kernel's expiries match pion's timers.
const (
	channelLifetime    = 10 * time.Minute
	permissionLifetime = 5 * time.Minute
)

// offloadPollInterval is how often the kernel's counters are added to the
// relay's metrics.
const offloadPollInterval = time.Second

// agentRetryMax bounds the wait between attempts to reach the fast-path
// agent; agentWaitEnabled is how long a relay whose fast path is Enabled
// waits for it at start before giving up.
const agentRetryMax = 30 * time.Second

var agentWaitEnabled = 30 * time.Second // a variable for tests

// offloader keeps the channels the kernel should relay and writes them to
// the kernel's table: a program the relay loaded itself, or the fast-path
// agent's (fastPath.socket), which may come and go and is written through a
// queue (agentqueue.go).
type offloader struct {
	log       *slog.Logger
	rlog      *rateLog
	active    prometheus.Gauge
	queueFull prometheus.Counter
	// udpPorts are the plain UDP listeners' ports: only their clients send
	// ChannelData the program can read (DTLS is encrypted).
	udpPorts map[uint16]bool
	stop     chan struct{} // closed by stopFastPath
	// connDone is closed when keepConnected returns (agent only).
	connDone chan struct{}

	mu sync.Mutex
	// kernel is nil while the agent is not connected; reason says why. The
	// channels are kept meanwhile, and written again when it is back.
	kernel kernelTable
	reason string
	// queue holds the writes for the agent while it is connected.
	queue *agentQueue
	// overflows counts the channels left in userspace because the queue
	// was full.
	overflows int
	// closed is set when the program is detached: pion may still report
	// channels of allocations it closes after that.
	closed   bool
	channels map[allocKey]map[uint16]*fastpath.Channel
	last     fastpath.Counters // counters already added to the metrics
}

// startFastPath starts the fast path relay.yaml asks for: Disabled does
// nothing; Auto relays in userspace, and says why, wherever the program
// cannot be had; Enabled fails the relay instead.
func (r *Relay) startFastPath(ctx context.Context) error {
	fp := r.fastPath
	mode := fp.EffectiveMode()
	if mode == config.FastPathDisabled {
		return nil
	}
	o := &offloader{log: r.log, rlog: r.rlog, active: r.metrics.fastPathActive, queueFull: r.metrics.fastPathQueueFull,
		udpPorts: map[uint16]bool{}, stop: make(chan struct{}), channels: map[allocKey]map[uint16]*fastpath.Channel{}}
	for _, l := range r.cfg.Listeners {
		if l.Protocol == config.UDP {
			o.udpPorts[uint16(l.Port)] = true
		}
	}
	if fp.Socket != "" {
		return r.startFastPathAgent(ctx, o, mode == config.FastPathEnabled)
	}
	interfaces := fp.Interfaces
	if len(interfaces) == 0 {
		interfaces = defaultFastPathInterfaces(r.current().addrs.bind)
	}
	kernel, err := fastpath.Load(interfaces)
	if err != nil {
		if mode == config.FastPathEnabled {
			return fmt.Errorf("fastPath.mode Enabled: %w", err)
		}
		r.fastPathReason = err.Error()
		r.log.Warn("fast path unavailable, relaying in userspace", "reason", err.Error(), "interfaces", interfaces)
		return nil
	}
	o.kernel = kernel
	r.offload = o
	o.active.Set(1)
	r.log.Info("fast path active", "interfaces", kernel.Interfaces())
	go r.pollFastPath(ctx)
	return nil
}

// startFastPathAgent connects to the fast-path agent and keeps connecting
// whenever the connection is lost. Until it is connected the relay relays
// in userspace. With Enabled, the first connection must succeed within
// agentWaitEnabled.
func (r *Relay) startFastPathAgent(ctx context.Context, o *offloader, enabled bool) error {
	o.reason = "connecting to the fast-path agent"
	socket := r.fastPath.Socket
	var first *wire.Client
	if enabled {
		wait, cancel := context.WithTimeout(ctx, agentWaitEnabled)
		defer cancel()
		var err error
		for first, err = wire.Dial(wait, socket); err != nil; first, err = wire.Dial(wait, socket) {
			if !sleepCtx(wait, time.Second) {
				return fmt.Errorf("fastPath.mode Enabled: the fast-path agent at %s: %w", socket, err)
			}
		}
	}
	r.offload = o
	o.connDone = make(chan struct{})
	go o.keepConnected(socket, first)
	go r.pollFastPath(ctx)
	return nil
}

// keepConnected connects to the agent, hands it the channels, waits for the
// connection to end, and starts again, until stopFastPath.
func (o *offloader) keepConnected(socket string, cl *wire.Client) {
	defer close(o.connDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-o.stop; cancel() }()
	backoff := time.Second
	for ctx.Err() == nil {
		var err error
		if cl == nil {
			cl, err = wire.Dial(ctx, socket)
		}
		var last fastpath.Counters
		if err == nil {
			// The agent's counters run since it loaded the program: only
			// what it relays from now on is this relay's to add.
			if last, err = cl.Counters(); err != nil {
				cl.Close()
			}
		}
		if err != nil {
			cl = nil
			o.setReason("fast-path agent: " + err.Error())
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, agentRetryMax)
			continue
		}
		backoff = time.Second
		q := o.attach(cl, last)
		writing := make(chan struct{})
		go func() {
			defer close(writing)
			if q != nil {
				o.writeToAgent(cl, q)
			}
		}()
		select {
		case <-cl.Done():
		case <-ctx.Done():
		}
		o.mu.Lock()
		o.detachLocked(cl)
		o.mu.Unlock()
		cl.Close()
		<-writing
		cl = nil
	}
}

// attach makes cl the kernel's table and queues every channel for it; the
// ones it refuses go back to userspace. It returns the connection's queue,
// nil after stopFastPath.
func (o *offloader) attach(cl *wire.Client, counters fastpath.Counters) *agentQueue {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		cl.Close()
		return nil
	}
	q := newAgentQueue()
	o.kernel, o.reason, o.queue, o.last = cl, "", q, counters
	n := 0
	for k, chans := range o.channels {
		for _, c := range chans {
			q.add(channelOp(k, wire.OpPut, *c), false)
			n++
		}
	}
	o.active.Set(1)
	o.log.Info("fast path active through the fast-path agent", "interfaces", cl.Interfaces(), "channels", n)
	return q
}

// writeToAgent sends q's writes to the agent until cl's connection ends:
// up to wire.MaxBatch in one batch, the next batch once the agent has
// answered, so the agent does them in the order they were queued.
func (o *offloader) writeToAgent(cl *wire.Client, q *agentQueue) {
	for {
		select {
		case <-q.wake:
		case <-cl.Done():
			return
		}
		for {
			o.mu.Lock()
			if o.queue != q {
				o.mu.Unlock()
				return
			}
			batch := q.take(wire.MaxBatch)
			q.inFlight = len(batch)
			o.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			reqs := make([]wire.Request, len(batch))
			for i, op := range batch {
				reqs[i] = op.req
			}
			refused, err := cl.Batch(reqs)
			o.mu.Lock()
			if o.queue != q { // stopped or detached meanwhile
				o.mu.Unlock()
				return
			}
			q.inFlight = 0
			if err != nil {
				o.failed(err, "fast path: writing to the fast-path agent")
				o.mu.Unlock()
				return
			}
			for i, err := range refused {
				if err != nil {
					o.refused(batch[i], err)
				}
			}
			o.mu.Unlock()
		}
	}
}

// refused handles the agent's refusal of op; o.mu is held. A refused put
// takes its channel back to userspace, and out of the kernel: the agent
// may still hold an older version of it. A newer write of the channel,
// queued meanwhile, will have its own answer.
func (o *offloader) refused(op *agentOp, err error) {
	args := []any{"error", err.Error()}
	if c := op.req.Channel; c != nil {
		args = append(args, "client", c.Client.String(), "peer", c.Peer.String())
	}
	o.rlog.warn("fastpath-refused-"+op.req.Op, "fast path: the fast-path agent refused a "+op.req.Op, args...)
	if op.req.Op != wire.OpPut || o.queue.queued(op.key) {
		return
	}
	if c := o.channels[op.alloc][op.req.Channel.Number]; c != nil {
		o.remove(op.alloc, c)
	}
}

// detachLocked drops a table whose connection failed: what the kernel
// relayed for this relay goes back to userspace (the agent deletes the
// relay's entries when its connection ends, or is gone itself). o.mu is
// held.
func (o *offloader) detachLocked(cl *wire.Client) {
	if o.closed || o.kernel != kernelTable(cl) {
		return // stopFastPath closed it: nothing to fall back from
	}
	cl.Close()
	o.kernel, o.queue = nil, nil
	o.reason = "fast-path agent connection lost"
	if err := cl.Err(); err != nil {
		o.reason += ": " + err.Error()
	}
	o.active.Set(0)
	o.log.Warn("fast path inactive, relaying in userspace", "reason", o.reason)
}

// failed handles an error of the kernel's table; o.mu is held. An agent
// connection that broke is dropped; a refusal is only logged.
func (o *offloader) failed(err error, msg string, args ...any) {
	o.log.Warn(msg, append(args, "error", err.Error())...)
	if cl, ok := o.kernel.(*wire.Client); ok && cl.Err() != nil {
		o.detachLocked(cl)
	}
}

func (o *offloader) setReason(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.kernel == nil && o.reason != reason {
		o.log.Warn("fast path inactive, relaying in userspace", "reason", reason)
		o.reason = reason
	}
}

// sleepCtx sleeps for d, or returns false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// stopFastPath detaches the program; what is left relays in userspace.
func (r *Relay) stopFastPath() {
	if r.offload == nil {
		return
	}
	r.addFastPathCounters()
	o := r.offload
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.closed = true
	o.queue = nil
	close(o.stop)
	if o.kernel != nil {
		if err := o.kernel.Close(); err != nil {
			r.log.Warn("closing the fast path", "error", err.Error())
		}
	}
	r.metrics.fastPathActive.Set(0)
	o.mu.Unlock()
	if o.connDone != nil {
		<-o.connDone // nothing of the fast path outlives the relay
	}
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
	kernel, closed := o.kernel, o.closed
	o.mu.Unlock()
	if closed || kernel == nil {
		return
	}
	// Not under o.mu: the agent answers after the writes queued before.
	c, err := kernel.Counters()
	o.mu.Lock()
	if o.closed || o.kernel != kernel {
		o.mu.Unlock()
		return
	}
	if err != nil {
		o.failed(err, "reading the fast path's counters")
		o.mu.Unlock()
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
	relayNetwork := "udp4"
	if !relayAP.Addr().Unmap().Is4() {
		relayNetwork = "udp6"
	}
	bind, _, err := st.addrs.forNetwork(relayNetwork)
	if err != nil {
		return
	}
	if k.client.Addr().Unmap().Is4() && listenAP.Addr().IsUnspecified() { // a dual-stack wildcard listener: "[::]"
		listenAP = netip.AddrPortFrom(netip.IPv4Unspecified(), listenAP.Port())
	}
	now := timeNow()
	c := &fastpath.Channel{
		Client: k.client, Listener: listenAP, Number: number,
		Peer: peerAP, Relay: netip.AddrPortFrom(bind, relayAP.Port()),
		ChannelExpires:    now.Add(channelLifetime),
		PermissionExpires: now.Add(permissionLifetime),
		BytesPerSecond:    st.quotas.BandwidthPerAllocation,
		LocalPeerPorts:    st.policy.localPeerPorts(peerAP.Addr()),
	}
	if ok, _ := st.policy.checkPort(peerAP); !ok {
		return // a node port peers may not use: userspace drops its packets
	}
	c.ClientLocal, c.PeerLocal = st.onHost(k.client.Addr()), st.onHost(peerAP.Addr())
	if !c.Offloadable() {
		return
	}
	r.withOffload(func(o *offloader) {
		if _, known := o.channels[k][number]; !o.put(k, c, !known) {
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
	delete(o.channels[k], c.Number)
	last := len(o.channels[k]) == 0
	if last {
		delete(o.channels, k)
	}
	switch {
	case o.queue != nil:
		o.queue.add(channelOp(k, wire.OpDelete, *c), false)
		if last {
			o.queue.add(quotaOp(c.Relay.Port()), false)
		}
	case o.kernel != nil:
		if err := o.kernel.Delete(*c); err != nil {
			o.failed(err, "fast path: deleting a channel")
		}
		if !last {
			return
		}
		if err := o.kernel.DeleteQuota(c.Relay.Port()); err != nil {
			o.failed(err, "fast path: deleting a bandwidth quota")
		}
	}
}

// put writes c into the kernel's table, or queues it for the agent; o.mu
// is held. fresh is a channel the table does not hold yet: the only write
// a full queue refuses. False: c stays in userspace.
func (o *offloader) put(k allocKey, c *fastpath.Channel, fresh bool) bool {
	switch {
	case o.queue != nil:
		if o.queue.add(channelOp(k, wire.OpPut, *c), fresh) {
			return true
		}
		o.overflows++
		o.queueFull.Inc()
		o.rlog.warn("fastpath-queue-full", "fast path: the fast-path agent's queue is full, the channel stays in userspace",
			"queued", o.queue.pending(), "client", c.Client.String(), "peer", c.Peer.String())
		return false
	case o.kernel != nil:
		if err := o.kernel.Put(*c); err != nil {
			o.failed(err, "fast path: channel not offloaded", "client", c.Client.String(), "peer", c.Peer.String())
			return false
		}
	}
	return true // the agent is away: kept for when it is back
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
			o.put(k, c, false)
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
	mode := r.fastPath.EffectiveMode()
	if mode == config.FastPathDisabled {
		return nil
	}
	st := &config.FastPathStatus{Mode: string(mode), Agent: r.fastPath.Socket != ""}
	o := r.offload
	if o == nil {
		st.Reason = r.fastPathReason
		return st
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		st.Reason = "stopped"
	case o.kernel == nil:
		st.Reason = o.reason
	default:
		st.Active, st.Interfaces = true, o.kernel.Interfaces()
		for _, chans := range o.channels {
			st.Channels += len(chans)
		}
		if o.queue != nil {
			st.Pending = o.queue.pending()
		}
	}
	st.QueueFull = o.overflows
	return st
}
