package relay

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched receive (recvmmsg) for the UDP listener sockets.
//
// pion's read loop calls ReadFrom once per datagram, which on a plain
// *net.UDPConn is one recvfrom system call per packet; with one sendto on
// the relay socket, that is two system calls per relayed packet, and they
// are ~85 % of the relay's CPU. recvmmsg fills up to batchSize datagrams in
// one call, and ReadFrom then serves the following calls from memory: under
// load the receive side costs one system call per batch instead of one per
// packet. When the socket is idle, recvmmsg returns what is there (often a
// single datagram) and never waits for a batch to fill, so batching adds no
// latency.
//
// Nothing here allocates per packet: headers, iovecs, address buffers and
// packet buffers are allocated once per socket, and source addresses come
// from a cache (see addrCache).

const (
	// batchSize is how many datagrams one recvmmsg may return. 32 amortises
	// the system call well (the gain flattens beyond ~16) and keeps the
	// buffers of a socket at 64 KiB.
	batchSize = 32
	// slotSize is the buffer per datagram. pion drops anything of its
	// inboundMTU (1600 bytes) or more, so a larger datagram only needs to be
	// recognisable as too large, which a truncated copy of len(p) is.
	slotSize = 2048
)

// mmsghdr is struct mmsghdr of <sys/socket.h>. Go pads the struct to its
// alignment as C does (64 bytes on 64-bit, 32 on 32-bit platforms).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32 // bytes received into this message
}

// recvBatch reads a UDP socket with recvmmsg and hands out one datagram at
// a time. It is used by one goroutine only (pion's read loop of the socket).
type recvBatch struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for IPv4 and IPv6 sources
	slab  []byte                  // batchSize buffers of slotSize bytes

	filled, next int           // datagrams in the batch, and the next to serve
	errno        syscall.Errno // result of the last recvmmsg
	recvFn       func(fd uintptr) bool
	addrs        addrCache
}

// newRecvBatch prepares batched reads of c. The iovecs and name pointers
// are set once: recvmmsg only writes lengths back, which refill resets.
func newRecvBatch(c *net.UDPConn) (*recvBatch, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &recvBatch{
		rc:    rc,
		hdrs:  make([]mmsghdr, batchSize),
		iovs:  make([]unix.Iovec, batchSize),
		names: make([]unix.RawSockaddrInet6, batchSize),
		slab:  make([]byte, batchSize*slotSize),
		addrs: newAddrCache(),
	}
	for i := range b.hdrs {
		b.iovs[i].Base = &b.slab[i*slotSize]
		b.iovs[i].SetLen(slotSize)
		h := &b.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
	}
	// A method value made once: passing b.recv to RawConn.Read on every
	// call would allocate a new closure each time.
	b.recvFn = b.recv
	return b, nil
}

// ReadFrom copies the next datagram into p, reading a new batch when the
// current one is used up. Like net.UDPConn, a datagram longer than p is
// truncated to len(p).
func (b *recvBatch) ReadFrom(p []byte) (int, net.Addr, error) {
	for b.next == b.filled {
		if err := b.refill(); err != nil {
			return 0, nil, err
		}
	}
	i := b.next
	b.next++
	n := copy(p, b.slab[i*slotSize:i*slotSize+int(b.hdrs[i].n)])
	if b.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
		n = len(p) // longer than slotSize: make it look too long to pion, too
	}
	return n, b.addrs.get(&b.names[i]), nil
}

// refill blocks (in Go's netpoller, not in the kernel) until at least one
// datagram is there, and reads as many as are queued, up to batchSize.
func (b *recvBatch) refill() error {
	for i := range b.hdrs {
		b.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].hdr.Flags = 0
	}
	b.next, b.filled = 0, 0
	if err := b.rc.Read(b.recvFn); err != nil {
		return err // the socket was closed, or a deadline passed
	}
	if b.errno != 0 {
		return os.NewSyscallError("recvmmsg", b.errno)
	}
	return nil
}

// recv is the RawConn.Read callback: false means "nothing queued, wait
// until the socket is readable and call again".
func (b *recvBatch) recv(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return false
		case errno != 0:
			b.errno, b.filled = errno, 0
		default:
			b.errno, b.filled = 0, int(n)
		}
		return true
	}
}

// addrCache turns raw source addresses into *net.UDPAddr values without
// allocating for sources seen before. pion keeps the address it is given
// (in a new allocation's five-tuple), so cached values are never modified.
// The cache is emptied when full, which bounds its memory however many
// source addresses (spoofed or not) arrive; an address dropped from it
// stays valid wherever pion still holds it.
type addrCache map[netip.AddrPort]*net.UDPAddr

// addrCacheMax bounds the cache: ~100 bytes per entry, so ~6.5 MB at most.
const addrCacheMax = 1 << 16

func newAddrCache() addrCache { return make(addrCache) }

func (c addrCache) get(sa *unix.RawSockaddrInet6) *net.UDPAddr {
	ap, zone := sockaddrToAddrPort(sa)
	if a, ok := c[ap]; ok {
		return a
	}
	if len(c) >= addrCacheMax {
		clear(c)
	}
	a := &net.UDPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port()), Zone: zone}
	c[ap] = a
	return a
}

// sockaddrToAddrPort decodes a sockaddr_in or sockaddr_in6. The port is in
// network byte order in both. The zone (an interface name, for link-local
// IPv6 sources) is looked up only here, on a cache miss.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) (netip.AddrPort, string) {
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(sa4.Port)), ""
	}
	addr := netip.AddrFrom16(sa.Addr)
	zone := ""
	if sa.Scope_id != 0 {
		if ifc, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
			zone = ifc.Name
		}
		addr = addr.WithZone(zone)
	}
	return netip.AddrPortFrom(addr, port(sa.Port)), zone
}

// port converts a port as stored in a sockaddr (big-endian) to a number.
func port(raw uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&raw))
	return uint16(b[0])<<8 | uint16(b[1])
}
