package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// rawSender sends the datagrams of many clients through one raw socket, so
// that one sendmmsg carries datagrams from several clients, as a NIC's
// driver hands the kernel a batch of datagrams from many sources at once.
// Through each client's own socket, one system call carries one client's
// datagrams only: one datagram per call at 10,000 allocations. The fast
// path's program runs inside the sender's system call, so it would pay for
// the return to userspace between two datagrams, which on a machine with
// kernel page-table isolation and no PCIDs empties the TLB (see
// docs/performance.md). A relay on a real network never sees that.
//
// The datagrams carry the clients' addresses and ports, so the relays see
// exactly the clients' traffic. The kernel writes the IP header; over IPv4
// the UDP checksum is left 0 (allowed), over IPv6 the kernel computes it
// (IPV6_CHECKSUM).
type rawSender struct {
	conn    *ipv4.PacketConn // sendmmsg on any socket; the name says nothing of the family
	headers map[*client][]byte
}

// newRawSender opens a raw socket bound to the clients' address, which
// they all share, and connected to dst's address (the relay's listener, or
// the sink for the direct baseline). A raw socket looks its route up for
// every datagram, where the clients' connected sockets keep theirs: the
// relays' runs and direct's alike pay that.
//
// The socket also receives a copy of every UDP datagram from dst's address
// to the clients'. Over IPv4 none comes (the clients are on 127.0.0.2).
// Over IPv6 the clients share the sink's address, and the relays send
// from ::1: the kernel clones each datagram that reaches the sink into the
// socket, whose buffer is full, and drops the clone. That costs every
// relay's run alike, not direct's (whose datagrams come from the clients'
// own address).
func newRawSender(clients []*client, dst netip.AddrPort) (*rawSender, error) {
	src := clients[0].LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	family, v6 := unix.AF_INET, src.Is6() && !src.Is4In6()
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("raw socket (needs root): %w", err)
	}
	f := os.NewFile(uintptr(fd), "raw UDP")
	defer f.Close() // FilePacketConn holds a copy
	// It never reads what it receives (above): the smallest buffer.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0)
	bind, connect := sockaddr(src), sockaddr(dst.Addr())
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, 6); err != nil {
			return nil, fmt.Errorf("IPV6_CHECKSUM: %w", err)
		}
	}
	if err := unix.Bind(fd, bind); err != nil {
		return nil, fmt.Errorf("bind raw socket to %s: %w", src, err)
	}
	if err := unix.Connect(fd, connect); err != nil {
		return nil, fmt.Errorf("connect raw socket to %s: %w", dst.Addr(), err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	s := &rawSender{conn: ipv4.NewPacketConn(pc), headers: map[*client][]byte{}}
	for _, c := range clients {
		from := c.LocalAddr().(*net.UDPAddr).AddrPort()
		if from.Addr().Unmap() != src.Unmap() {
			pc.Close()
			return nil, fmt.Errorf("clients on %s and %s: a raw socket sends from one address", src, from.Addr())
		}
		h := make([]byte, 8)
		binary.BigEndian.PutUint16(h, from.Port())
		binary.BigEndian.PutUint16(h[2:], dst.Port())
		s.headers[c] = h
	}
	return s, nil
}

func sockaddr(a netip.Addr) unix.Sockaddr {
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Addr: a.Unmap().As4()}
	}
	return &unix.SockaddrInet6{Addr: a.As16()}
}

// message points m at a datagram from c with payload (m's buffers are
// reused from one call to the next).
func (s *rawSender) message(m *ipv4.Message, c *client, payload []byte) {
	h := s.headers[c]
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	if cap(m.Buffers) < 2 {
		m.Buffers = make([][]byte, 2)
	}
	m.Buffers = append(m.Buffers[:0], h, payload)
}

func (s *rawSender) Close() error { return s.conn.Close() }
