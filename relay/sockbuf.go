package relay

import (
	"net"

	"golang.org/x/sys/unix"
)

// listenerBufferSize is the receive and send buffer of each UDP listener
// socket. Every client of a CPU's share shares one listener socket, so a
// burst (a video keyframe from many clients at once, or a scheduling hiccup
// of the read loop) queues there; the kernel default (~200 KiB, a few
// hundred datagrams) drops it. 4 MiB holds ~2,500 full-size datagrams
// (the kernel charges each datagram its buffer overhead too), ~10 ms at
// 200k packets/s. Memory is only used while packets are queued.
const listenerBufferSize = 4 << 20

// setSocketBuffers sets SO_RCVBUF and SO_SNDBUF to size. The ...FORCE
// variants (root or CAP_NET_ADMIN, which a hostNetwork relay often has)
// ignore net.core.rmem_max/wmem_max, whose defaults (~200 KiB) would
// silently cap the plain options; without the privilege it falls back to
// the plain options and takes what the sysctl allows. Best effort: a
// socket with default buffers still works, it just drops bursts sooner.
func setSocketBuffers(c *net.UDPConn, size int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, size)
		setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, size)
	})
}

func setBuffer(fd, force, plain, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
	}
}
