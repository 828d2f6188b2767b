package main

import (
	"fmt"
	"time"
)

type cellKey struct {
	relay        string
	allocs, size int
	rate         string
}

type setupKey struct {
	relay  string
	allocs int
}

// report collects every measurement for the summary.
type report struct {
	cells  map[cellKey][]measurement
	setups map[setupKey]setupResult
}

func newReport() *report {
	return &report{cells: map[cellKey][]measurement{}, setups: map[setupKey]setupResult{}}
}

// print writes the medians, one row per relay and cell, with turnpike's
// ratios to coturn: delivered packets/s, and packets per CPU-second (the
// inverse of CPU per packet; above 1 means turnpike is cheaper).
func (rep *report) print(o options, relays []*relayProc) {
	fmt.Printf("\nmedians of %d runs:\n", o.runs)
	fmt.Printf("%-9s %6s %6s %7s %10s %7s %9s %9s %9s %9s %9s %12s\n",
		"relay", "allocs", "bytes", "offered", "pkt/s", "loss", "µs CPU", "switches", "p50", "p99", "pkt/s", "pkt/CPU-s")
	fmt.Printf("%-9s %6s %6s %7s %10s %7s %9s %9s %9s %9s %9s %12s\n",
		"", "", "", "", "delivered", "", "/pkt", "/pkt", "latency", "latency", "vs coturn", "vs coturn")
	for _, n := range o.allocs {
		for _, size := range o.sizes {
			for _, rate := range o.rates {
				base, hasBase := rep.cells[cellKey{"coturn", n, size, rate}]
				for _, r := range relays {
					ms := rep.cells[cellKey{r.name, n, size, rate}]
					if len(ms) == 0 {
						continue
					}
					m := median(ms)
					ppsRatio, cpuRatio := "-", "-"
					if hasBase {
						b := median(base)
						ppsRatio = fmt.Sprintf("%.2f", m.pps/b.pps)
						cpuRatio = fmt.Sprintf("%.2f", float64(b.cpuPerPacket)/float64(m.cpuPerPacket))
					}
					fmt.Printf("%-9s %6d %6d %7s %10.0f %6.2f%% %9.2f %9.3f %9s %9s %9s %12s\n",
						r.name, n, size, rate, m.pps, 100*m.loss, m.cpuPerPacket.Seconds()*1e6, m.switches,
						fmtLatency(m.p50), fmtLatency(m.p99), ppsRatio, cpuRatio)
				}
			}
		}
	}
	fmt.Printf("\nallocation set-up (%d in parallel; Allocate with credentials + ChannelBind) and idle memory:\n", o.setupWorkers)
	fmt.Printf("%-9s %6s %13s %14s %14s\n", "relay", "allocs", "allocations/s", "KB RSS/alloc", "rate vs coturn")
	for _, n := range o.allocs {
		base, hasBase := rep.setups[setupKey{"coturn", n}]
		for _, r := range relays {
			s, ok := rep.setups[setupKey{r.name, n}]
			if !ok {
				continue
			}
			ratio := "-"
			if hasBase && base.perSecond > 0 {
				ratio = fmt.Sprintf("%.2f", s.perSecond/base.perSecond)
			}
			perAlloc := "-" // one allocation is lost in the noise of RSS
			if n >= 100 {
				perAlloc = fmt.Sprintf("%.1f", s.rssPerAlloc/1024)
			}
			fmt.Printf("%-9s %6d %13.0f %14s %14s\n", r.name, n, s.perSecond, perAlloc, ratio)
		}
	}
}

func fmtLatency(d time.Duration) string {
	switch {
	case d >= time.Second:
		return ">1s"
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", d.Seconds()*1e3)
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}
