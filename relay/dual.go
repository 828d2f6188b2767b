package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// Dual allocations (RFC 8656 section 7.2, ADDITIONAL-ADDRESS-FAMILY): pion
// allocates one relay socket of one family per client 5-tuple
// (docs/pion-upstream.md, 9), so on a UDP listener socket turnpike makes a
// dual allocation out of two pion allocations:
//
//   - the IPv4 half is the client's own allocation, on its real 5-tuple;
//   - the IPv6 half is pion's allocation for a stand-in client address, an
//     address of the discard-only prefix 100::/64 (RFC 6666) that no
//     packet ever comes from or goes to. The listener wrapper hands pion
//     the client's requests for the IPv6 half as coming from the stand-in,
//     and sends what pion writes to the stand-in to the real client.
//
// The gate prepares the IPv6 half's Allocate (the client's request with
// REQUESTED-ADDRESS-FAMILY IPv6 in place of ADDITIONAL-ADDRESS-FAMILY,
// re-signed with the client's key, same transaction). When pion grants the
// IPv4 half, the wrapper holds that answer and hands pion the prepared
// request from the stand-in; pion's answer to it adds the IPv6
// XOR-RELAYED-ADDRESS to the held answer, in place of the ADDRESS-ERROR-CODE
// the gate's answer edits put there, and the client gets one answer. If the
// IPv6 half is refused (no IPv6 relay address, a quota), the client gets
// the held answer as it is: IPv4 and 440 for IPv6, RFC 8656's fallback.
//
// Requests are routed to a half by the family of their XOR-PEER-ADDRESS
// (CreatePermission, ChannelBind, Send; a request naming peers of both
// families goes by its first and is answered 443); a Refresh by its
// REQUESTED-ADDRESS-FAMILY (with LIFETIME 0 it deletes that half only), or
// to both halves without one (the stand-in's answer is dropped);
// ChannelData by the half that bound the channel. Once the IPv4 half is
// deleted, the IPv6 half serves every request.
//
// The halves are two allocations for quotas and metrics: each holds a
// relay socket and a port. The fast path never takes the IPv6 half's
// channels: it offloads IPv4 clients and peers only, and the stand-in is
// an IPv6 address. Stream listeners (TCP, TLS, DTLS) keep the
// fallback answer: their wrapper has no read loop of pion's to hand a
// second request to.

// standInPrefix is where stand-in client addresses come from: 100::/64,
// RFC 6666's discard-only prefix, never a peer (the peer policy refuses
// it as a special-purpose range) and never routed.
var standInPrefix = netip.MustParsePrefix("100::/64")

// isStandIn reports whether a is a stand-in client address.
func isStandIn(a netip.Addr) bool { return standInPrefix.Contains(a) }

// dualAlloc is one dual allocation.
type dualAlloc struct {
	client  allocKey       // the IPv4 half: the client's 5-tuple
	standIn netip.AddrPort // the IPv6 half's client address
	// clientAddr and standInAddr are the same as net.Addrs, made once: the
	// wrapper hands them over per datagram.
	clientAddr, standInAddr *net.UDPAddr
	id                      [stun.TransactionIDSize]byte
	key                     []byte // the client's key, to re-sign the answer
	// request is the IPv6 half's Allocate, until pion grants the IPv4 half.
	request []byte
	// held is pion's answer granting the IPv4 half, until the IPv6 half's
	// answer completes it; answer is the complete one, for retransmissions.
	held, answer []byte
	// channels are the channel numbers bound on the IPv6 half (pion's
	// channel events), which route the client's ChannelData there.
	channels map[uint16]bool
	// refreshCopy is the transaction of a Refresh handed to both halves:
	// the stand-in's answer to it is dropped.
	refreshCopy [stun.TransactionIDSize]byte
	// prepared is when the gate prepared the IPv6 half: an entry pion never
	// answered (a socket closed in between) is swept after standInLinger.
	prepared time.Time
	// ipv4Gone is set once pion deleted the IPv4 half.
	ipv4Gone bool
	// gone is when pion deleted the IPv6 half (zero while it lives). The
	// stand-in still leads to the client for a while: pion deletes the
	// allocation before it answers the Refresh that deleted it.
	gone time.Time
}

// standInLinger is how long a deleted IPv6 half's stand-in still leads to
// its client, for pion's answer to the Refresh that deleted it.
const standInLinger = time.Minute

// dualTable holds the relay's dual allocations.
type dualTable struct {
	count     atomic.Int64 // entries: ChannelData skips the lock while none
	next      atomic.Uint64
	mu        sync.RWMutex // the maps and the entries' fields
	byClient  map[allocKey]*dualAlloc
	byStandIn map[netip.AddrPort]*dualAlloc
	// channels routes the client's ChannelData on a channel bound on an
	// IPv6 half to its stand-in. It is read for every datagram of every
	// client while any dual allocation exists, without the lock: the
	// read loops of all cores would contend for it.
	channels sync.Map // channelRoute -> *net.UDPAddr (the stand-in)
}

// channelRoute is one channel of one client of a UDP listener port.
type channelRoute struct {
	client netip.AddrPort
	port   uint16 // the listener's
	number uint16
}

// routeOf is the channelRoute of the ChannelData msg from client on local.
func routeOf(msg []byte, client, local net.Addr) (channelRoute, bool) {
	c, ok1 := client.(*net.UDPAddr)
	l, ok2 := local.(*net.UDPAddr)
	if !ok1 || !ok2 {
		return channelRoute{}, false
	}
	ap := c.AddrPort()
	return channelRoute{client: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), port: uint16(l.Port),
		number: binary.BigEndian.Uint16(msg)}, true
}

func newDualTable() *dualTable {
	return &dualTable{byClient: map[allocKey]*dualAlloc{}, byStandIn: map[netip.AddrPort]*dualAlloc{}}
}

// prepare starts a dual allocation for the client of k: the gate calls it
// for a valid dual Allocate with the IPv6 half's request. A client that has
// one already (a retransmission) keeps it.
func (t *dualTable) prepare(k allocKey, m *stun.Message, key, request []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byClient[k]; ok {
		return
	}
	var b [16]byte
	copy(b[:], standInPrefix.Addr().AsSlice())
	binary.BigEndian.PutUint64(b[8:], t.next.Add(1))
	standIn := netip.AddrPortFrom(netip.AddrFrom16(b), k.client.Port())
	d := &dualAlloc{client: k, standIn: standIn, clientAddr: net.UDPAddrFromAddrPort(k.client),
		standInAddr: net.UDPAddrFromAddrPort(standIn), id: m.TransactionID, key: key, request: request,
		channels: map[uint16]bool{}, prepared: timeNow()}
	t.byClient[k] = d
	t.byStandIn[d.standIn] = d
	t.count.Add(1)
}

// forget sees pion delete the allocation of k. When that is an IPv6 half,
// the client is left with a plain IPv4 allocation. When it is an IPv4 half
// (a Refresh with REQUESTED-ADDRESS-FAMILY IPv4 and LIFETIME 0), the IPv6
// half serves all the client's requests until pion deletes it too.
func (t *dualTable) forget(k allocKey) {
	if t.count.Load() == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.byClient[k]; ok && d.request == nil && d.held == nil {
		d.ipv4Gone = true
	}
	if d, ok := t.byStandIn[k.client]; ok && isStandIn(k.client.Addr()) && d.gone.IsZero() {
		t.unroute(d)
		d.gone = timeNow()
	}
}

// sweep forgets the stand-ins of IPv6 halves deleted standInLinger ago,
// and dual Allocates pion left unanswered as long.
func (t *dualTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range t.byStandIn {
		switch {
		case !d.gone.IsZero() && now.Sub(d.gone) > standInLinger:
			delete(t.byStandIn, d.standIn)
			t.count.Add(-1)
		case (d.request != nil || d.held != nil) && now.Sub(d.prepared) > standInLinger:
			t.drop(d)
		}
	}
}

// ipv6Half returns the allocation key of the IPv6 half of the dual
// allocation of the client of k, once both halves are granted, and
// whether it is the only half left.
func (t *dualTable) ipv6Half(k allocKey) (v6 allocKey, only, ok bool) {
	if t.count.Load() == 0 {
		return allocKey{}, false, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	d, ok := t.byClient[k]
	if !ok || d.request != nil || d.held != nil {
		return allocKey{}, false, false
	}
	return allocKey{network: k.network, port: k.port, client: d.standIn}, d.ipv4Gone, true
}

// halves returns the key of the half of k's allocation that serves the
// request m (the IPv6 half for an IPv6 peer or family, or when it is the
// only half left), and the other half's key; other is false for a plain
// allocation.
func (t *dualTable) halves(k allocKey, m *stun.Message) (serving, otherHalf allocKey, other bool) {
	v6, only, ok := t.ipv6Half(k)
	switch {
	case !ok:
		return k, allocKey{}, false
	case only || wantsIPv6Half(m):
		return v6, k, true
	}
	return k, v6, true
}

// channelEvent records a channel pion bound (or deleted) on the allocation
// of k, when that is an IPv6 half.
func (t *dualTable) channelEvent(k allocKey, number uint16, bound bool) {
	if t.count.Load() == 0 || !isStandIn(k.client.Addr()) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.byStandIn[k.client]; ok {
		route := channelRoute{client: d.client.client, port: d.client.port, number: number}
		if bound {
			d.channels[number] = true
			t.channels.Store(route, d.standInAddr)
		} else {
			delete(d.channels, number)
			t.channels.Delete(route)
		}
	}
}

// wantsIPv6Half reports whether the request m names the IPv6 half: its
// first XOR-PEER-ADDRESS is IPv6, or (a Refresh) its REQUESTED-ADDRESS-FAMILY.
func wantsIPv6Half(m *stun.Message) bool {
	if v, err := m.Get(stun.AttrRequestedAddressFamily); err == nil && m.Type.Method == stun.MethodRefresh {
		return len(v) > 0 && v[0] == familyIPv6
	}
	v, err := m.Get(stun.AttrXORPeerAddress)
	return err == nil && len(v) > 1 && v[1] == familyIPv6
}

// inbound returns the client address pion should see for msg (a STUN
// message the gate let through, or ChannelData) from client on local, and
// a copy to hand pion from the stand-in as well (a Refresh for both halves).
func (t *dualTable) inbound(msg []byte, client, local net.Addr) (from net.Addr, alsoFromStandIn []byte, standIn net.Addr) {
	if t == nil || t.count.Load() == 0 {
		return client, nil, nil
	}
	if msg[0]>>6 == 0b01 { // ChannelData
		if route, ok := routeOf(msg, client, local); ok {
			if standIn, ok := t.channels.Load(route); ok {
				return standIn.(*net.UDPAddr), nil, nil
			}
		}
		return client, nil, nil
	}
	k, ok := keyFor(client, local)
	if !ok {
		return client, nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	d, ok := t.byClient[k]
	if !ok || d.request != nil || d.held != nil {
		return client, nil, nil
	}
	standIn = d.standInAddr
	m := &stun.Message{Raw: append([]byte(nil), msg...)}
	if m.Decode() != nil {
		return client, nil, nil
	}
	switch {
	case d.ipv4Gone || wantsIPv6Half(m):
		return standIn, nil, nil
	case m.Type.Method == stun.MethodRefresh && !m.Contains(stun.AttrRequestedAddressFamily):
		d.refreshCopy = m.TransactionID
		return client, msg, standIn
	}
	return client, nil, nil
}

// clientOf is the real client behind addr: the client of a stand-in,
// else addr itself.
func (t *dualTable) clientOf(addr net.Addr) net.Addr {
	if t == nil || t.count.Load() == 0 || !isStandInAddr(addr) {
		return addr
	}
	_, ap, _ := addrPort(addr)
	t.mu.RLock()
	defer t.mu.RUnlock()
	if d, ok := t.byStandIn[ap]; ok {
		return d.clientAddr
	}
	return addr
}

// outbound is what the wrapper does with pion's write b to addr, answered
// (answer()) for the real client: send it (maybe replaced), or nothing
// (send false). inject, when set, is a request to hand pion from the
// stand-in injectFrom next: the IPv6 half's Allocate once pion granted the
// IPv4 half.
func (t *dualTable) outbound(b []byte, addr, local net.Addr) (out []byte, send bool, inject []byte, injectFrom net.Addr) {
	if t == nil || t.count.Load() == 0 || !isSTUNResponse(b) {
		return b, true, nil, nil
	}
	_, ap, ok := addrPort(addr)
	if !ok {
		return b, true, nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.byStandIn[ap]; ok && isStandIn(ap.Addr()) {
		out, send = t.fromStandIn(d, b)
		return out, send, nil, nil
	}
	k, ok := keyFor(addr, local)
	d, dual := t.byClient[k]
	if !ok || !dual || [stun.TransactionIDSize]byte(b[8:stunHeaderSize]) != d.id || d.held != nil {
		return b, true, nil, nil
	}
	switch {
	case binary.BigEndian.Uint16(b) != allocateSuccessType:
		if d.request != nil { // pion refused the IPv4 half: no dual allocation
			t.drop(d)
		}
	case d.answer != nil: // a retransmission pion answered from its cache
		return d.answer, true, nil, nil
	case d.request != nil:
		d.held = append([]byte(nil), b...)
		inject, d.request = d.request, nil
		return nil, false, inject, d.standInAddr
	}
	return b, true, nil, nil
}

// drop forgets d at once (locked): pion refused one of its halves.
func (t *dualTable) drop(d *dualAlloc) {
	t.unroute(d)
	delete(t.byStandIn, d.standIn)
	t.count.Add(-1)
}

// unroute stops routing the client's requests and ChannelData to the IPv6
// half of d (locked): the client is left with a plain allocation.
func (t *dualTable) unroute(d *dualAlloc) {
	for number := range d.channels {
		t.channels.Delete(channelRoute{client: d.client.client, port: d.client.port, number: number})
	}
	clear(d.channels)
	if t.byClient[d.client] == d {
		delete(t.byClient, d.client)
	}
}

// fromStandIn handles pion's write b, a STUN response, to the stand-in of
// d (locked): the IPv6 half's Allocate answer completes the held one; the
// answer to a Refresh copy is dropped.
func (t *dualTable) fromStandIn(d *dualAlloc, b []byte) (out []byte, send bool) {
	id := [stun.TransactionIDSize]byte(b[8:stunHeaderSize])
	switch {
	case d.held != nil && id == d.id:
		d.answer = completeDualAnswer(d.held, b, d.key)
		d.held = nil
		if binary.BigEndian.Uint16(b) != allocateSuccessType {
			t.drop(d)
		}
		return d.answer, true
	case id == d.refreshCopy:
		return nil, false
	}
	return b, true
}

// completeDualAnswer is the answer to a dual Allocate: held (the IPv4
// half's, with an ADDRESS-ERROR-CODE 440 for IPv6) with the IPv6 half's
// XOR-RELAYED-ADDRESS from v6answer in place of the ADDRESS-ERROR-CODE,
// re-signed with key. When the IPv6 half failed, held is the answer.
func completeDualAnswer(held, v6answer, key []byte) []byte {
	if binary.BigEndian.Uint16(v6answer) != allocateSuccessType {
		return held
	}
	relayed, ok := findAttribute(v6answer, stun.AttrXORRelayedAddress)
	m := &stun.Message{Raw: append([]byte(nil), held...)}
	if !ok || m.Decode() != nil {
		return held
	}
	errorType := attrAddressErrorCode
	if m.Contains(attrAddressErrorCodeDraft) {
		errorType = attrAddressErrorCodeDraft
	}
	to := stun.RawAttribute{Type: stun.AttrXORRelayedAddress, Value: append([]byte(nil), relayed...)}
	out, ok := resigned(m, key, []attrEdit{{from: errorType, to: to}})
	if !ok {
		return held
	}
	return out
}

// isStandInAddr reports whether addr is a stand-in client address. It
// runs on every datagram: the first bytes decide before any conversion.
func isStandInAddr(addr net.Addr) bool {
	u, ok := addr.(*net.UDPAddr)
	if !ok || len(u.IP) != net.IPv6len || u.IP[0] != 0x01 || u.IP[1] != 0 {
		return false
	}
	a, _ := netip.AddrFromSlice(u.IP)
	return isStandIn(a)
}

// dualRequest is the IPv6 half's Allocate for the dual Allocate m: m with
// REQUESTED-ADDRESS-FAMILY IPv6 in place of ADDITIONAL-ADDRESS-FAMILY, the
// gate's edits applied, signed with key.
func dualRequest(m *stun.Message, key []byte, edits []attrEdit) ([]byte, bool) {
	_, errorType, found := additionalFamily(m)
	if !found {
		return nil, false
	}
	from := attrAdditionalAddressFamily
	if errorType == attrAddressErrorCodeDraft {
		from = attrAdditionalAddressFamilyDraft
	}
	family := stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{familyIPv6, 0, 0, 0}}
	return resigned(m, key, append([]attrEdit{{from: from, to: family}}, edits...))
}
