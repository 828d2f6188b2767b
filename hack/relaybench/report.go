package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
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
	cells      map[cellKey][]measurement
	setups     map[setupKey]setupResult
	background []float64 // every run's background load
	// statsOwn is what the BPF statistics add to every run of a program
	// (statsCost); 0: not measured.
	statsOwn time.Duration
}

func newReport() *report {
	return &report{cells: map[cellKey][]measurement{}, setups: map[setupKey]setupResult{}}
}

// cost is one relay's medians in one cell, with what the relay itself adds
// to the machine's CPU time per packet: its system-wide µs per packet minus
// the direct baseline's (raw may be negative: noise; relay is floored at 0).
type cost struct {
	m          measurement
	relay, raw float64 // µs per delivered packet
	hasDirect  bool
}

func (rep *report) cost(relay string, n, size int, rate string) (cost, bool) {
	ms := rep.cells[cellKey{relay, n, size, rate}]
	if len(ms) == 0 {
		return cost{}, false
	}
	c := cost{m: median(ms)}
	if c.m.hasKernel {
		// The fast path's cost is its program's run time: the rest of the
		// datagram's way (generator, delivery to the sink) is direct's.
		c.hasDirect, c.raw, c.relay = true, c.m.kernelUS, c.m.kernelUS
		return c, true
	}
	if ds := rep.cells[cellKey{directName, n, size, rate}]; len(ds) > 0 {
		c.hasDirect = true
		c.raw = c.m.sysUS - median(ds).sysUS
		c.relay = max(0, c.raw)
	}
	return c, true
}

// ratios are a relay's figures relative to coturn's in the same cell:
// delivered packets/s, and packets per CPU-second (coturn's CPU per packet
// ÷ the relay's; above 1 is cheaper than coturn) on the system basis (the
// relay's µs/pkt above the direct baseline) and on the process basis (the
// relay process's own CPU time). +Inf when the relay's cost is 0, NaN when
// there is nothing to compare.
type ratios struct{ pps, system, process float64 }

func (rep *report) ratios(relay string, n, size int, rate string) (ratios, bool) {
	c, ok := rep.cost(relay, n, size, rate)
	b, okb := rep.cost(coturnName, n, size, rate)
	if !ok || !okb || relay == directName {
		return ratios{}, false
	}
	r := ratios{pps: c.m.pps / b.m.pps, system: math.NaN()}
	if c.hasDirect && b.relay > 0 {
		r.system = b.relay / c.relay // +Inf for 0
	}
	r.process = float64(b.m.cpuPerPacket) / float64(c.m.cpuPerPacket)
	return r, true
}

// print writes the medians, one row per relay and cell, with the ratios
// to coturn.
func (rep *report) print(o options, relays []*relayProc) {
	names := []string{}
	for _, r := range relays {
		names = append(names, r.name)
	}
	names = append(names, directName)
	fmt.Printf("\nmedians of %d runs (proc: the relay process's CPU time; sys: the whole machine's busy time, all CPUs;\n", o.runs)
	fmt.Printf("relay: sys minus direct's sys in the same cell, floored at 0, the raw difference in parentheses when below 0):\n")
	const row = "%-13s %6s %5s %7s %9s %7s %8s %8s %8s %14s %8s %8s %9s %9s %9s %9s %6s\n"
	fmt.Printf("%-13s %6s %5s %7s %9s %7s %8s %8s %8s %14s %8s %8s %9s %19s %9s %6s\n",
		"relay", "allocs", "bytes", "offered", "pkt/s", "loss", "proc µs", "switches", "sys µs", "relay µs", "p50", "p99", "pkt/s", "pkt/CPU-s vs coturn", "fast path", "bg")
	fmt.Printf(row, "", "", "", "", "delivered", "", "/pkt", "/pkt", "/pkt", "/pkt", "latency", "latency", "vs coturn", "system", "process", "share", "load")
	inactive := false
	for _, n := range o.allocs {
		for _, size := range o.sizes {
			for _, rate := range o.rates {
				for _, name := range names {
					c, ok := rep.cost(name, n, size, rate)
					if !ok {
						continue
					}
					m := c.m
					proc, switches, relayUS := "-", "-", "-"
					if name != directName {
						proc = fmt.Sprintf("%.2f", m.cpuPerPacket.Seconds()*1e6)
						switches = fmt.Sprintf("%.3f", m.switches)
						if c.hasDirect {
							relayUS = fmt.Sprintf("%.2f", c.relay)
							if c.raw < 0 {
								relayUS = fmt.Sprintf("0 (%.2f)", c.raw)
							}
						}
					}
					ppsRatio, sysRatio, procRatio := "-", "-", "-"
					if r, ok := rep.ratios(name, n, size, rate); ok && m.fastPath != fastPathInactive {
						ppsRatio, sysRatio, procRatio = fmtRatio(r.pps), fmtRatio(r.system), fmtRatio(r.process)
					}
					fp := "-"
					switch m.fastPath {
					case fastPathActive:
						fp = fmtPercent(m.fastPathShare)
					case fastPathInactive:
						fp, inactive = "inactive", true
					}
					fmt.Printf(row, name, strconv.Itoa(n), strconv.Itoa(size), rate, fmt.Sprintf("%.0f", m.pps), fmt.Sprintf("%.2f%%", 100*m.loss),
						proc, switches, fmt.Sprintf("%.2f", m.sysUS), relayUS, fmtLatency(m.p50), fmtLatency(m.p99), ppsRatio, sysRatio, procRatio, fp,
						fmtPercent(m.background))
				}
			}
		}
	}
	fmt.Printf("%s relay µs/pkt: its TC program's run time per delivered packet (kernel BPF statistics), not sys minus direct\n", ebpfName)
	fmt.Printf("direct: the same clients' addresses, sending and pacing, payloads sent straight to the sink, no relay (the generator's and the sink's cost)\n")
	fmt.Printf("sys µs/pkt counts user+nice+system+irq+softirq from /proc/stat, not steal; over the run and 200 ms after it, all processes on the machine\n")
	if inactive {
		fmt.Printf("%s rows marked inactive: the fast path was not attached; those are the userspace relay, no ratios shown\n", ebpfName)
	}
	if o.relayCPUs != "" {
		fmt.Printf("relays pinned to CPU %s; %s's kernel work runs on the sending (generator's) CPU, which is not pinned\n", o.relayCPUs, ebpfName)
	}
	if len(rep.background) > 0 {
		bg := slices.Sorted(slices.Values(rep.background))
		fmt.Printf("bg load: the machine's CPUs busy in the 100 ms before each run, the bench idle (other work, which sys µs/pkt counts): median %s, max %s\n",
			fmtPercent(bg[len(bg)/2]), fmtPercent(bg[len(bg)-1]))
	}
	fmt.Printf("\nallocation set-up (%d in parallel; Allocate with credentials + ChannelBind) and idle memory:\n", o.setupWorkers)
	fmt.Printf("%-13s %6s %13s %14s %14s\n", "relay", "allocs", "allocations/s", "KB RSS/alloc", "rate vs coturn")
	for _, n := range o.allocs {
		base, hasBase := rep.setups[setupKey{coturnName, n}]
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
			fmt.Printf("%-13s %6d %13.0f %14s %14s\n", r.name, n, s.perSecond, perAlloc, ratio)
		}
	}
}

// printGoals compares this run's medians with the project's goals.
func (rep *report) printGoals(o options) {
	fmt.Printf("\ngoals (this run's figures; ratios are the median over its cells):\n")
	for _, g := range []struct {
		relay, what string
		goal        float64
	}{{turnpikeName, "userspace relay", 1.3}, {ebpfName, "fast path", 20}} {
		var sys, proc, share []float64
		cells, inactive := 0, 0
		for _, n := range o.allocs {
			for _, size := range o.sizes {
				for _, rate := range o.rates {
					r, ok := rep.ratios(g.relay, n, size, rate)
					if !ok {
						continue
					}
					c, _ := rep.cost(g.relay, n, size, rate)
					if c.m.fastPath == fastPathInactive {
						inactive++
						continue
					}
					if c.m.fastPath == fastPathActive {
						share = append(share, c.m.fastPathShare)
					}
					cells++
					if !math.IsNaN(r.system) {
						sys = append(sys, r.system)
					}
					proc = append(proc, r.process)
				}
			}
		}
		label := fmt.Sprintf("  %s (%s), packets per CPU-second vs coturn, goal ≥ %.1f×:", g.what, g.relay, g.goal)
		switch {
		case cells == 0 && inactive > 0:
			fmt.Printf("%s not measured: the fast path was not active\n", label)
			continue
		case cells == 0:
			fmt.Printf("%s not measured (no cell with it and coturn)\n", label)
			continue
		}
		fmt.Printf("%s system basis %s, per-process basis %s (%d cells", label,
			goalRatio(sys, g.goal), goalRatio(proc, g.goal), cells)
		if len(share) > 0 {
			slices.Sort(share)
			fmt.Printf("; the kernel relayed %s to %s of delivered packets, median %s", fmtPercent(share[0]), fmtPercent(share[len(share)-1]), fmtPercent(share[len(share)/2]))
		}
		if inactive > 0 {
			fmt.Printf("; %d cells without the fast path left out", inactive)
		}
		fmt.Printf(")\n")
	}

	rep.printKernelGoals(o)

	// Set-up rate: one allocation is one round trip, not a rate; use the
	// larger counts when there are any.
	var counts []int
	for _, n := range o.allocs {
		if n >= 100 {
			counts = append(counts, n)
		}
	}
	if len(counts) == 0 {
		counts = o.allocs
	}
	for _, relay := range []string{turnpikeName, ebpfName} {
		var parts []string
		met, any := true, false
		for _, n := range counts {
			s, ok := rep.setups[setupKey{relay, n}]
			b, okb := rep.setups[setupKey{coturnName, n}]
			if !ok || !okb || b.perSecond == 0 {
				continue
			}
			any = true
			r := s.perSecond / b.perSecond
			met = met && r >= 2
			parts = append(parts, fmt.Sprintf("%d allocations %.2f×", n, r))
		}
		if any {
			fmt.Printf("  allocation set-up rate vs coturn (%s), goal ≥ 2×: %s: %s\n", relay, strings.Join(parts, ", "), metWord(met))
		}
	}
	for _, relay := range []string{turnpikeName, ebpfName} {
		if _, started := rep.setups[setupKey{relay, o.allocs[0]}]; !started {
			continue
		}
		s, ok := rep.setups[setupKey{relay, 10000}]
		if !ok {
			fmt.Printf("  RSS per idle allocation at 10,000 (%s), goal ≤ 10 KB: not measured (-allocs has no 10000)\n", relay)
			continue
		}
		kb := s.rssPerAlloc / 1024
		fmt.Printf("  RSS per idle allocation at 10,000 (%s), goal ≤ 10 KB: %.1f KB: %s\n", relay, kb, metWord(kb <= 10))
	}
}

// Fast path goals besides the ratio to coturn: what its program costs per
// packet at 10,000 allocations, and no loss at 200k packets/s wherever the
// direct baseline (no relay) loses nothing either.
const (
	kernelGoalUS     = 0.5
	kernelGoalAllocs = 10000
	lossGoalRate     = "200000"
)

func (rep *report) printKernelGoals(o options) {
	var us, perDelivered []float64
	var lossy, overGoal []string
	lossCells := 0
	for _, n := range o.allocs {
		for _, size := range o.sizes {
			for _, rate := range o.rates {
				c, ok := rep.cost(ebpfName, n, size, rate)
				if !ok || c.m.fastPath != fastPathActive {
					continue
				}
				if n == kernelGoalAllocs && c.m.hasKernel {
					us = append(us, c.m.kernelRelayedUS)
					perDelivered = append(perDelivered, c.m.kernelUS)
					if c.m.kernelRelayedUS > kernelGoalUS {
						overGoal = append(overGoal, fmt.Sprintf("%d B %s: %.2f", size, rate, c.m.kernelRelayedUS))
					}
				}
				d, okd := rep.cost(directName, n, size, rate)
				if rate != lossGoalRate || !okd || d.m.loss > 0 {
					continue
				}
				lossCells++
				if c.m.loss > 0 {
					lossy = append(lossy, fmt.Sprintf("%d allocs %d B: %s", n, size, fmtPercent(c.m.loss)))
				}
			}
		}
	}
	label := fmt.Sprintf("  fast path (%s), kernel µs per packet relayed at %d allocations, goal ≤ %.1f:", ebpfName, kernelGoalAllocs, kernelGoalUS)
	if len(us) == 0 {
		fmt.Printf("%s not measured\n", label)
	} else {
		slices.Sort(us)
		slices.Sort(perDelivered)
		own := ""
		if rep.statsOwn > 0 {
			// Per run; the program runs about once per relayed packet
			// (and on whatever else crosses lo meanwhile).
			own = fmt.Sprintf("; the statistics' own cost %.2f per run", rep.statsOwn.Seconds()*1e6)
		}
		// Judged both ways: each cell, and the median of the cells (as the
		// ratio to coturn is). A cell's figure varies by about ±0.08
		// between runs here, most in the paced cells, whose system calls
		// carry few datagrams (see docs/performance.md).
		every := metWord(len(overGoal) == 0)
		if len(overGoal) > 0 {
			every += " (" + strings.Join(overGoal, "; ") + ")"
		}
		fmt.Printf("%s %.2f to %.2f (median %.2f%s; per delivered packet %.2f to %.2f): every cell %s; the median of the cells %s\n", label,
			us[0], us[len(us)-1], us[len(us)/2], own, perDelivered[0], perDelivered[len(perDelivered)-1], every, metWord(us[len(us)/2] <= kernelGoalUS))
	}
	label = fmt.Sprintf("  fast path (%s), 0 %% loss at %s packets/s where direct has none:", ebpfName, lossGoalRate)
	switch {
	case lossCells == 0:
		fmt.Printf("%s not measured (no such cell)\n", label)
	case len(lossy) == 0:
		fmt.Printf("%s %d cells, none lost: met\n", label, lossCells)
	default:
		fmt.Printf("%s %d of %d cells lost (%s): NOT met\n", label, len(lossy), lossCells, strings.Join(lossy, "; "))
	}
}

// goalRatio is the median of ratios and whether it meets goal.
func goalRatio(rs []float64, goal float64) string {
	if len(rs) == 0 {
		return "-"
	}
	slices.Sort(rs)
	m := rs[len(rs)/2]
	return fmt.Sprintf("%s× (%s)", fmtRatio(m), metWord(m >= goal))
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

func fmtRatio(r float64) string {
	switch {
	case math.IsNaN(r):
		return "-"
	case math.IsInf(r, 1):
		return "inf"
	}
	return fmt.Sprintf("%.2f", r)
}

func fmtPercent(f float64) string {
	if f < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f%%", 100*f)
}

// fmtProcess, fmtSwitches and fmtFastPathRun format a run's figures for
// its progress line.
func fmtProcess(r *relayProc, m measurement) string {
	if r.direct {
		return "-"
	}
	return fmt.Sprintf("%.2f", m.cpuPerPacket.Seconds()*1e6)
}

func fmtSwitches(r *relayProc, m measurement) string {
	if r.direct {
		return "-"
	}
	return fmt.Sprintf("%.3f", m.switches)
}

func fmtFastPathRun(m measurement) string {
	switch m.fastPath {
	case fastPathActive:
		return ", fast path relayed " + fmtPercent(m.fastPathShare)
	case fastPathInactive:
		return ", fast path NOT active"
	}
	return ""
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
