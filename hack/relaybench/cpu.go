package main

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// systemBusy is the CPU time the whole machine has spent working so far,
// summed over all CPUs: user + nice + system + irq + softirq from the
// aggregate "cpu" line of /proc/stat. Idle and iowait are not work. Steal
// is left out too: it is time the hypervisor ran someone else instead of
// this machine, not work done here (guest and guest_nice are already part
// of user and nice).
//
// This is the fair basis for comparing relays, the eBPF fast path included:
// a relay that forwards in the kernel (TC) does its work in softirq context
// of whoever sent the packet, the load generator here, so its own process
// CPU time says nothing about its cost. System-wide time sees it all; the
// generator's and the sink's share is measured separately (the "direct"
// baseline) and subtracted.
func systemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, errors.New("/proc/stat: no aggregate cpu line")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system (idle iowait) irq softirq
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ticks) * time.Second / ticksPerSecond, nil
}

// backgroundLoad measures how busy the machine is, as a fraction of all
// its CPUs, over d while the bench itself sends nothing: the other work on
// a shared machine, which system-wide CPU time per packet also counts.
func backgroundLoad(d time.Duration) float64 {
	before, err := systemBusy()
	start := time.Now()
	time.Sleep(d)
	after, err2 := systemBusy()
	if err != nil || err2 != nil {
		return -1
	}
	return float64(after-before) / (float64(time.Since(start)) * float64(runtime.NumCPU()))
}
