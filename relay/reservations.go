package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v4"
)

// RESERVATION-TOKEN (RFC 8656 section 7.2), kept at turnpike's edge. An
// Allocate with EVEN-PORT gets an even relayed port and a token for port+1,
// which a later Allocate (an RTCP socket next to an RTP one) redeems for
// the relayed address of the same family at port+1. pion keeps its
// reservations per listener socket, remembers only the port, and holds
// nothing (docs/pion-upstream.md, 8), so turnpike keeps its own, one table
// for the whole relay:
//
//   - The address generator, asked for an even port (pion's EVEN-PORT
//     handling), binds an even port and the next one, and holds the second
//     (holdNext).
//   - answer() sees pion's success response carrying the token and files
//     the held socket under it (noteReservation).
//   - The gate, seeing an Allocate that redeems a token, takes the token
//     out of the request, asks pion for the reserved socket's family
//     instead, and has the generator of the socket the request arrived on
//     hand pion the held socket (redeemToken, relayAddressGenerator.claim).
//
// An unredeemed reservation is closed after reservationLifetime; one pion
// made for an EVEN-PORT without the R bit is released when answer() takes
// the token out of pion's answer (signing.go).

// reservationLifetime is how long a reservation is held (pion's 30 s).
const reservationLifetime = 30 * time.Second

// heldPort is the socket of a reserved port+1.
type heldPort struct {
	conn    *net.UDPConn
	network string // "udp4" or "udp6"
	expires time.Time
}

// evenPort names a held socket by the even port it was reserved next to,
// until pion's answer names its token.
type evenPort struct {
	network string
	port    int
}

type reservations struct {
	mu      sync.Mutex
	pending map[evenPort]*heldPort
	byToken map[string]*heldPort
}

func newReservations() *reservations {
	return &reservations{pending: map[evenPort]*heldPort{}, byToken: map[string]*heldPort{}}
}

// holdNext keeps conn, bound to port+1, for the allocation at the even port.
func (rs *reservations) holdNext(network string, port int, conn *net.UDPConn) {
	h := &heldPort{conn: conn, network: network, expires: timeNow().Add(reservationLifetime)}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if old := rs.pending[evenPort{network, port}]; old != nil {
		_ = old.conn.Close()
	}
	rs.pending[evenPort{network, port}] = h
}

// file moves the socket held next to the even port under token.
func (rs *reservations) file(token string, even evenPort) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if h, ok := rs.pending[even]; ok {
		delete(rs.pending, even)
		rs.byToken[token] = h
	}
}

// lookup returns the reservation of token without taking it.
func (rs *reservations) lookup(token string) (*heldPort, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	h, ok := rs.byToken[token]
	return h, ok
}

// take removes the reservation of token and returns its socket.
func (rs *reservations) take(token string) (*heldPort, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	h, ok := rs.byToken[token]
	delete(rs.byToken, token)
	return h, ok
}

// release closes the socket reserved under token, if any.
func (rs *reservations) release(token string) {
	if h, ok := rs.take(token); ok {
		_ = h.conn.Close()
	}
}

// sweep closes the reservations nobody redeemed in time.
func (rs *reservations) sweep(now time.Time) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for k, h := range rs.pending {
		if now.After(h.expires) {
			_ = h.conn.Close()
			delete(rs.pending, k)
		}
	}
	for k, h := range rs.byToken {
		if now.After(h.expires) {
			_ = h.conn.Close()
			delete(rs.byToken, k)
		}
	}
}

// closeAll releases every held socket (the relay stops).
func (rs *reservations) closeAll() {
	rs.sweep(time.Unix(1<<40, 0))
}

// allocateSuccessType is the message type of an Allocate success response.
var allocateSuccessType = stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse).Value()

// noteReservation is answer()'s hook: an Allocate success carrying a
// RESERVATION-TOKEN names the socket held next to its relayed port.
func (r *Relay) noteReservation(b []byte) {
	if len(b) < stunHeaderSize || binary.BigEndian.Uint16(b) != allocateSuccessType {
		return
	}
	token, ok := findAttribute(b, stun.AttrReservationToken)
	if !ok {
		return
	}
	v, ok := findAttribute(b, stun.AttrXORRelayedAddress)
	if !ok {
		return
	}
	relayed, ok := decodeXORAddress(v, [stun.TransactionIDSize]byte(b[8:stunHeaderSize]))
	if !ok {
		return
	}
	r.reservations.file(string(token), evenPort{network: udpNetwork(relayed.Addr()), port: int(relayed.Port())})
}

// udpNetwork is pion's name of a UDP relay socket's network for a.
func udpNetwork(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "udp4"
	}
	return "udp6"
}

// requestedFamily is the REQUESTED-ADDRESS-FAMILY value for network.
func requestedFamily(network string) byte {
	if network == "udp6" {
		return familyIPv6
	}
	return familyIPv4
}

// redeemToken handles an Allocate (of user, for allocation k) carrying a
// RESERVATION-TOKEN before pion does. It returns the edit that replaces
// the token with the reserved family, having told gen to hand pion the
// held socket, or the error to answer: 508 for a token turnpike does not
// hold (RFC 8656 section 7.2, step 5). A retransmission (k has its
// allocation already) goes to pion unchanged, which answers it again.
func (r *Relay) redeemToken(gen *relayAddressGenerator, m *stun.Message, k allocKey, user string) (edit attrEdit, code stun.ErrorCode) {
	if gen == nil || m.Contains(stun.AttrEvenPort) || m.Contains(stun.AttrRequestedAddressFamily) {
		return attrEdit{}, 0 // pion answers 400 to either, or this is a test's gate
	}
	if r.allocs.has(k) {
		return attrEdit{}, 0
	}
	token, err := m.Get(stun.AttrReservationToken)
	if err != nil {
		return attrEdit{}, 0
	}
	h, ok := r.reservations.lookup(string(token))
	if !ok {
		return attrEdit{}, stun.CodeInsufficientCapacity
	}
	gen.claim(user, h.network, string(token))
	return attrEdit{from: stun.AttrReservationToken, to: stun.RawAttribute{
		Type: stun.AttrRequestedAddressFamily, Value: []byte{requestedFamily(h.network), 0, 0, 0}}}, 0
}
