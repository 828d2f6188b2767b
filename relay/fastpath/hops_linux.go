//go:build linux

package fastpath

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The program keeps, per CPU, the next hop the kernel's routes gave for
// each way it forwards on (struct hop in turnrelay.c): asking the kernel
// is about half of what forwarding a datagram costs. A kept hop holds
// while hop_gen has the generation it was found under, and the process
// that loaded the program (the fast-path agent) raises that generation
// whenever the host's routing may have changed: on
// every rtnetlink notification of a link, address, route, nexthop,
// neighbour, rule or forwarding setting, and every hopRefresh whatever it
// hears. So a hop outlives a change the agent heard of by about
// hopCoalesce, and one it cannot hear of by hopRefresh at most: a lost
// notification, and what the kernel changes without one (a path MTU
// learnt from ICMP, sysctls of multipath hashing).
//
// Without the notifications (the socket could not be opened, or reading
// it failed) the generation is 0, which no kept hop ever matches: the
// program asks the kernel for every datagram, as it did before it kept
// hops.

// hopRefresh is how often the generation rises without a notification (a
// variable so that a test can leave only the notifications).
var hopRefresh = time.Second

// hopCoalesce is the least time between two raises: notifications come in
// bursts (a link going down takes its addresses, routes and neighbours).
const hopCoalesce = 20 * time.Millisecond

// rtnetlinkGroups are the notifications that may change a next hop.
const rtnetlinkGroups = unix.RTMGRP_LINK | unix.RTMGRP_NEIGH |
	unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV6_ROUTE |
	1<<(unix.RTNLGRP_IPV4_RULE-1) | 1<<(unix.RTNLGRP_IPV6_RULE-1) |
	1<<(unix.RTNLGRP_IPV4_NETCONF-1) | 1<<(unix.RTNLGRP_IPV6_NETCONF-1) |
	1<<(unix.RTNLGRP_NEXTHOP-1)

// hopWatch raises the generation of kept hops.
type hopWatch struct {
	gen     *ebpf.Map
	value   uint64
	changes *os.File // the rtnetlink socket, in the network namespace Load ran in
	stop    chan struct{}
	deaf    chan struct{} // closed when reading the socket failed
	wg      sync.WaitGroup
}

// watchHops starts raising gen. Without an rtnetlink socket it leaves gen
// at 0 (no hop is kept) and returns nil.
func watchHops(gen *ebpf.Map) *hopWatch {
	changes, err := rtnetlinkSocket()
	if err != nil {
		return nil
	}
	w := &hopWatch{gen: gen, changes: changes, stop: make(chan struct{}), deaf: make(chan struct{})}
	if err := w.raise(); err != nil {
		changes.Close()
		return nil
	}
	heard := make(chan struct{}, 1)
	w.wg.Add(2)
	go w.listen(heard)
	go w.raiseOn(heard)
	return w
}

// rtnetlinkSocket subscribes to rtnetlinkGroups, as a file the runtime's
// poller reads (so that closing it ends a read).
func rtnetlinkSocket() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: rtnetlinkGroups}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "rtnetlink"), nil
}

// listen tells heard of every notification, and of notifications lost
// (a full socket buffer: ENOBUFS), until the socket closes or fails.
func (w *hopWatch) listen(heard chan<- struct{}) {
	defer w.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		_, err := w.changes.Read(buf)
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			select {
			case <-w.stop: // closed
			default:
				close(w.deaf)
			}
			return
		}
		select {
		case heard <- struct{}{}:
		default: // a raise is due already
		}
	}
}

// raiseOn raises the generation after each notification, at most once a
// hopCoalesce, and every hopRefresh. Once the agent can hear no more
// changes it sets the generation to 0: no hop is kept from then on.
func (w *hopWatch) raiseOn(heard <-chan struct{}) {
	defer w.wg.Done()
	refresh := time.NewTicker(hopRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-w.deaf:
			_ = w.gen.Put(uint32(0), uint64(0))
			return
		case <-heard:
		case <-refresh.C:
		}
		_ = w.raise() // fails only once the map is closed
		select {
		case <-w.stop:
			return
		case <-time.After(hopCoalesce):
		}
	}
}

// raise moves the generation on (never to 0: 64 bits do not wrap).
func (w *hopWatch) raise() error {
	w.value++
	return w.gen.Put(uint32(0), w.value)
}

// close stops the raises, before the maps close.
func (w *hopWatch) close() {
	if w == nil {
		return
	}
	close(w.stop)
	w.changes.Close()
	w.wg.Wait()
}
