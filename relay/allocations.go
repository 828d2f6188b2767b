package relay

import (
	"net"
	"net/netip"
	"sync"
)

// allocKey identifies an allocation the way every pion hook can compute it:
// the client's address plus the transport and port of the listener it came
// in on. (pion's own five-tuple uses the listener's local address, which for
// a wildcard TCP listener differs between the accept socket and the
// connection, so the local IP is left out.)
type allocKey struct {
	network string // "udp" (UDP, DTLS) or "tcp" (TCP, TLS)
	port    uint16 // listener port
	client  netip.AddrPort
}

// keyFor builds the allocKey for a client address seen on local.
func keyFor(client, local net.Addr) (allocKey, bool) {
	network, lp, ok := addrPort(local)
	if !ok {
		return allocKey{}, false
	}
	_, cp, ok := addrPort(client)
	if !ok {
		return allocKey{}, false
	}
	return allocKey{network: network, port: lp.Port(), client: cp}, true
}

// addrPort converts a UDP or TCP net.Addr to its transport and a canonical
// (unmapped) AddrPort.
func addrPort(a net.Addr) (network string, ap netip.AddrPort, ok bool) {
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
		network = "udp"
	case *net.TCPAddr:
		ap = v.AddrPort()
		network = "tcp"
	default:
		return "", netip.AddrPort{}, false
	}
	return network, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// allocState is what the relay tracks about one allocation, for quotas.
type allocState struct {
	user        string
	v6          bool               // the relayed address is IPv6
	permissions map[netip.Addr]int // peer IP -> number of grants (pion may report a peer twice)
	channels    map[uint16]bool
	// pendingChannel is the channel number of the ChannelBind request being
	// processed right now (-1 when the current request is something else).
	// pion asks the PermissionHandler without saying which request it serves;
	// the request inspector records it here first.
	pendingChannel int
}

// allocTracker mirrors pion's allocations from its EventHandler callbacks.
// pion keeps its allocation table private; quotas need counts per user and
// per allocation, so we keep our own.
type allocTracker struct {
	mu      sync.Mutex
	allocs  map[allocKey]*allocState
	perUser map[string]int
	perms   int
	chans   int
}

func newAllocTracker() *allocTracker {
	return &allocTracker{allocs: map[allocKey]*allocState{}, perUser: map[string]int{}}
}

func (t *allocTracker) add(k allocKey, user string, v6 bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.allocs[k]; dup {
		return
	}
	t.allocs[k] = &allocState{user: user, v6: v6, permissions: map[netip.Addr]int{}, channels: map[uint16]bool{}, pendingChannel: -1}
	t.perUser[user]++
}

func (t *allocTracker) remove(k allocKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.allocs[k]
	if !ok {
		return
	}
	delete(t.allocs, k)
	t.perms -= len(a.permissions)
	t.chans -= len(a.channels)
	if t.perUser[a.user]--; t.perUser[a.user] <= 0 {
		delete(t.perUser, a.user)
	}
}

// has reports whether k is an open allocation.
func (t *allocTracker) has(k allocKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.allocs[k]
	return ok
}

// allocInfo is what the gate needs to know of an allocation.
type allocInfo struct {
	user string // the user ID (userIDOf)
	v6   bool
}

// lookup returns allocation k, if open.
func (t *allocTracker) lookup(k allocKey) (allocInfo, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.allocs[k]
	if !ok {
		return allocInfo{}, false
	}
	return allocInfo{user: a.user, v6: a.v6}, true
}

// isIPv6 reports whether a (a relayed address) is an IPv6 address.
func isIPv6(a net.Addr) bool {
	_, ap, ok := addrPort(a)
	return ok && ap.Addr().Is6()
}

// counts returns the number of allocations in total and for user.
func (t *allocTracker) counts(user string) (total, ofUser int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.allocs), t.perUser[user]
}

// totals returns allocations, permissions and channels across the relay.
func (t *allocTracker) totals() (allocs, perms, chans int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.allocs), t.perms, t.chans
}

func (t *allocTracker) permissionAdded(k allocKey, peer netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a, ok := t.allocs[k]; ok {
		if a.permissions[peer] == 0 {
			t.perms++
		}
		a.permissions[peer]++
	}
}

func (t *allocTracker) permissionRemoved(k allocKey, peer netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a, ok := t.allocs[k]; ok && a.permissions[peer] > 0 {
		if a.permissions[peer]--; a.permissions[peer] == 0 {
			delete(a.permissions, peer)
			t.perms--
		}
	}
}

func (t *allocTracker) channelAdded(k allocKey, number uint16) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a, ok := t.allocs[k]; ok && !a.channels[number] {
		a.channels[number] = true
		t.chans++
	}
}

func (t *allocTracker) channelRemoved(k allocKey, number uint16) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a, ok := t.allocs[k]; ok && a.channels[number] {
		delete(a.channels, number)
		t.chans--
	}
}

// hasChannel reports whether channel number is bound on allocation k.
func (t *allocTracker) hasChannel(k allocKey, number uint16) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.allocs[k]
	return ok && a.channels[number]
}

// setPendingChannel records which ChannelBind (or -1: not a ChannelBind) the
// allocation's client is sending now. Unknown allocations are ignored, so
// unauthenticated traffic cannot grow the tracker.
func (t *allocTracker) setPendingChannel(k allocKey, number int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a, ok := t.allocs[k]; ok {
		a.pendingChannel = number
	}
}

// Reasons a permission is refused by a per-allocation limit; the "quota"
// label of turnpike_relay_quota_rejections_total.
const (
	quotaAllocationsPerUser = "allocations_per_user"
	quotaAllocationsTotal   = "allocations_total"
	quotaPermissions        = "permissions"
	quotaChannels           = "channels"
	quotaBandwidth          = "bandwidth"
)

var quotaKinds = []string{quotaAllocationsPerUser, quotaAllocationsTotal, quotaPermissions, quotaChannels, quotaBandwidth}

// admitPeer applies the per-allocation permission and channel limits (0 =
// unlimited) to a grant of peer. Refreshing an existing permission or
// channel is always admitted. It returns "" or the quota that refused, and
// the number of the ChannelBind being admitted (-1: CreatePermission).
func (t *allocTracker) admitPeer(k allocKey, peer netip.Addr, maxPerms, maxChans int) (quota string, channel int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.allocs[k]
	if !ok {
		return "", -1 // pion refuses requests without an allocation itself
	}
	if a.pendingChannel >= 0 && maxChans > 0 && !a.channels[uint16(a.pendingChannel)] && len(a.channels) >= maxChans {
		return quotaChannels, a.pendingChannel
	}
	if maxPerms > 0 && a.permissions[peer] == 0 && len(a.permissions) >= maxPerms {
		return quotaPermissions, a.pendingChannel
	}
	return "", a.pendingChannel
}
