package relay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenerBufferSize is the receive and send buffer of each UDP listener
// socket. All clients of a CPU's share use one listener socket, so a burst
// (keyframes from many clients at once, or the read loop descheduled for a
// moment) queues there, and the kernel default (~200 KiB, about 250
// datagrams: the kernel charges each its ~800-byte overhead too) drops it.
// 1 MiB (the kernel doubles it for its bookkeeping) holds ~2,500 small
// datagrams, ~25 ms at 100k packets/s. Bigger is not better: under
// overload a full buffer is pure queueing delay for every packet behind it
// (4 MiB measured 100-200 ms p50 at full speed, useless for real-time
// media), while a drop costs one packet. Memory is only used while packets
// are queued.
const listenerBufferSize = 1 << 20

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

// reusePort sets SO_REUSEPORT (and SO_REUSEADDR) on a socket before bind.
func reusePort(_, _ string, c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) {
		if sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); sockErr != nil {
			return
		}
		sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return sockErr
}
