package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
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
