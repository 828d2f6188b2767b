package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// A minimal TURN client: Allocate with the long-term credential mechanism,
// then ChannelBind. Just enough to set up a channel; the benchmark then
// writes ChannelData frames straight to the socket.

// client is one allocation: its socket and what a later Refresh needs.
type client struct {
	*net.UDPConn
	auth []stun.Setter
}

// release ends the allocation (Refresh with LIFETIME 0, not waiting for the
// answer) and closes the socket, so the relay frees it now rather than at
// the end of its lifetime and the next scenario starts from a clean relay.
func (c *client) release() {
	if c.auth != nil {
		if req, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}}, c.auth...)...); err == nil {
			_, _ = c.Write(req.Raw)
		}
	}
	_ = c.Close()
}

// openChannel allocates on the relay at server from a socket on from and,
// when peer is valid, binds the bench channel to it. It returns the
// connected client socket.
func openChannel(from netip.Addr, server string, peer netip.AddrPort) (*client, error) {
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), raddr)
	if err != nil {
		return nil, err
	}
	integrity := stun.NewLongTermIntegrity(user, realm, password)
	allocate := []stun.Setter{stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}}
	if from.Is6() {
		// An IPv6 relay address (RFC 6156: IPv4 is the default, and
		// coturn refuses that on an IPv6 listener).
		allocate = append(allocate, stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{2, 0, 0, 0}})
	}

	res, err := roundTrip(c, stun.NewType(stun.MethodAllocate, stun.ClassRequest), allocate...)
	if err != nil {
		c.Close()
		return nil, err
	}
	var nonce stun.Nonce
	if err := nonce.GetFrom(res); err != nil {
		c.Close()
		return nil, fmt.Errorf("no nonce in the first answer: %w", err)
	}
	auth := []stun.Setter{stun.NewUsername(user), stun.NewRealm(realm), nonce, integrity}
	if res, err = roundTrip(c, stun.NewType(stun.MethodAllocate, stun.ClassRequest), append(allocate, auth...)...); err != nil {
		c.Close()
		return nil, err
	}
	if err := success(res); err != nil {
		c.Close()
		return nil, fmt.Errorf("allocate: %w", err)
	}
	if !peer.IsValid() {
		return &client{UDPConn: c, auth: auth}, nil
	}
	var xorPeer stun.XORMappedAddress
	xorPeer.IP, xorPeer.Port = peer.Addr().AsSlice(), int(peer.Port())
	peerAttr := stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{channel >> 8, channel & 0xff, 0, 0}}
	res, err = roundTrip(c, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		append([]stun.Setter{peerAttr, xorPeerSetter{xorPeer}}, auth...)...)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := success(res); err != nil {
		c.Close()
		return nil, fmt.Errorf("channel bind: %w", err)
	}
	return &client{UDPConn: c, auth: auth}, nil
}

type xorPeerSetter struct{ a stun.XORMappedAddress }

func (s xorPeerSetter) AddTo(m *stun.Message) error { return s.a.AddToAs(m, stun.AttrXORPeerAddress) }

func roundTrip(c *net.UDPConn, t stun.MessageType, attrs ...stun.Setter) (*stun.Message, error) {
	req, err := stun.Build(append([]stun.Setter{stun.TransactionID, t}, attrs...)...)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := c.Write(req.Raw); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break // timeout: resend
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() == nil && res.TransactionID == req.TransactionID {
				_ = c.SetReadDeadline(time.Time{})
				return res, nil
			}
		}
	}
	return nil, errors.New("no answer")
}

func success(m *stun.Message) error {
	if m.Type.Class == stun.ClassSuccessResponse {
		return nil
	}
	var code stun.ErrorCodeAttribute
	_ = code.GetFrom(m)
	return fmt.Errorf("error %d %s", code.Code, code.Reason)
}
