package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The fast path's own CPU cost. Its work runs in the sender's softirq, so
// /proc/stat's tick sampling (10 ms) can hardly see it next to the direct
// baseline; the kernel's BPF statistics time every run of the program
// instead (BPF_ENABLE_STATS, which adds two clock reads per run, counted
// in). They stay on while the bench holds the returned descriptor.

const fastPathProg = "turnrelay" // the TC program's name (relay/fastpath/turnrelay.c)

// enableBPFStats turns the statistics on and returns how to turn them off.
func enableBPFStats() (restore func(), err error) {
	c, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return nil, err
	}
	return func() { _ = c.Close() }, nil
}

// bpfRunTime is the total run time and run count of every loaded program
// named turnrelay (the bench's relay has the only one, unless a test runs).
func bpfRunTime() (time.Duration, uint64, error) {
	var total time.Duration
	var runs uint64
	found := false
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return 0, 0, err
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		var stats *ebpf.ProgramStats
		if err == nil && strings.HasPrefix(info.Name, fastPathProg) {
			stats, err = p.Stats()
		}
		_ = p.Close()
		if err != nil || stats == nil {
			continue
		}
		found = true
		total += stats.Runtime
		runs += stats.RunCount
	}
	if !found {
		return 0, 0, fmt.Errorf("no BPF program named %s is loaded", fastPathProg)
	}
	return total, runs, nil
}

// statsCost is what the statistics themselves add to a program's run
// time: the kernel reads its clock before and after every run, and part of
// that lands inside the interval. It is the median run time of a program
// of two instructions that passes every packet, attached to lo in a
// network namespace of its own (so that it sees none of the bench's
// traffic and the bench's programs none of its), over rounds of UDP
// datagrams sent to itself. The statistics must be on.
func statsCost() (time.Duration, error) {
	type result struct {
		cost time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The thread leaves for a namespace of its own and comes back.
		// It must not end instead: the relays were started with
		// Pdeathsig, which the kernel sends when the thread that
		// forked a child ends, and this may be that thread.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{0, err}
			runtime.UnlockOSThread()
			return
		}
		defer home.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{0, fmt.Errorf("a network namespace: %w", err)}
			runtime.UnlockOSThread()
			return
		}
		cost, err := statsCostHere()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stuck in the namespace: the thread stays locked and ends
			// with the goroutine, and stopping the relays is all that
			// is left.
			done <- result{0, fmt.Errorf("back from the probe's network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{cost, err}
	}()
	r := <-done
	return r.cost, r.err
}

// statsCostHere measures in the calling thread's network namespace, a new
// one.
func statsCostHere() (time.Duration, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := ifUp(fd, "lo"); err != nil {
		return 0, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL", Name: "statscost",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}, // TC_ACT_UNSPEC
	})
	if err != nil {
		return 0, err
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: loopbackIndex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return 0, err
	}
	defer l.Close()
	// Sent to its own address: every datagram passes the program once on
	// its way in, and the receive buffer, once full, drops the rest.
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return 0, err
	}
	self, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	payload := make([]byte, 100)
	var costs []time.Duration
	for range 5 {
		before, err := prog.Stats()
		if err != nil {
			return 0, err
		}
		for range 50000 {
			if err := unix.Sendto(fd, payload, 0, self); err != nil {
				return 0, err
			}
		}
		after, err := prog.Stats()
		if err != nil {
			return 0, err
		}
		if after.RunCount == before.RunCount {
			return 0, errors.New("the probe program never ran")
		}
		costs = append(costs, (after.Runtime-before.Runtime)/time.Duration(after.RunCount-before.RunCount))
	}
	slices.Sort(costs)
	return costs[len(costs)/2], nil
}

// loopbackIndex is lo's interface index in a new network namespace.
const loopbackIndex = 1

// ifUp brings an interface up (SIOCSIFFLAGS, through a socket in the
// calling thread's network namespace).
func ifUp(fd int, name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}
