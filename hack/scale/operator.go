package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/turnpike-dev/turnpike/hack/internal/proc"
)

// sample is one reading of the operator: its process from /proc and its
// own metrics. Times and counters are totals since the benchmark started,
// over every operator process it ran.
type sample struct {
	At              time.Time
	CPU             time.Duration
	RSS             int64
	ReconcileErrors float64
	Panics          float64
	Restarts        int
}

// operator runs `turnpike operator` and, as a kubelet would, starts it
// again when it exits, after a back-off that doubles while it keeps
// failing (at most maxRestarts times): an operator that loses its
// leader-election Lease exits on purpose, and one started while the API
// server is down exits at once.
// Every sampleInterval it reads the process's CPU time and RSS and
// scrapes its metrics.
type operator struct {
	bin        string
	args       []string
	log        io.Writer
	metricsURL string

	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	startedAt time.Time
	// leaderSince is when the running process was first seen holding
	// the leader-election Lease (its reconcilers run only then); zero
	// while it does not.
	leaderSince time.Time
	restarts    int
	stopping    bool
	cpuDone     time.Duration // CPU time of the processes that exited
	peakRSS     int64         // VmHWM, the highest of every process
	errs        counter
	panics      counter
	samples     []sample
}

const (
	sampleInterval  = time.Second
	minRestartDelay = 5 * time.Second
	maxRestartDelay = 40 * time.Second
	maxRestarts     = 30
)

func (o *operator) start() error {
	cmd := exec.Command(o.bin, o.args...)
	cmd.Stdout, cmd.Stderr = o.log, o.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	o.cmd, o.exited, o.startedAt = cmd, exited, time.Now()
	return nil
}

// run samples the operator until ctx ends, restarting it when it exits.
func (o *operator) run(ctx context.Context) {
	ticker := time.NewTicker(sampleInterval)
	defer ticker.Stop()
	var exitedAt time.Time
	delay := minRestartDelay
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		o.mu.Lock()
		select {
		case <-o.exited:
			if o.stopping {
				o.mu.Unlock()
				return
			}
			if exitedAt.IsZero() {
				o.collectExited()
				exitedAt = time.Now()
				delay = nextRestartDelay(delay, exitedAt.Sub(o.startedAt))
				fmt.Fprintf(os.Stderr, "scale: the operator exited (%v); starting it again in %s\n", o.cmd.ProcessState, delay)
			}
			if time.Since(exitedAt) >= delay && o.restarts < maxRestarts {
				o.restarts++
				if err := o.start(); err != nil {
					fmt.Fprintf(os.Stderr, "scale: restarting the operator: %v\n", err)
				}
				exitedAt = time.Time{}
			}
		default:
		}
		o.mu.Unlock()
		o.sample()
	}
}

// nextRestartDelay is the kubelet's crash-loop back-off, shortened: it
// doubles while the process keeps exiting soon after it started, and
// starts again from the minimum once a run lasted a minute.
func nextRestartDelay(last, ran time.Duration) time.Duration {
	if ran >= time.Minute {
		return minRestartDelay
	}
	return min(2*last, maxRestartDelay)
}

// collectExited adds an exited process's CPU time (its rusage) to the
// totals, and starts its metrics counters afresh.
func (o *operator) collectExited() {
	st := o.cmd.ProcessState
	o.cpuDone += st.UserTime() + st.SystemTime()
	// Its peak is the last VmHWM sampled, not its rusage: a child's
	// ru_maxrss includes this harness's own RSS, because Go starts
	// children sharing its memory (CLONE_VM|CLONE_VFORK) and exec records
	// that shared high-water mark into the child's maxrss. A process that
	// lived less than a sample interval is not counted.
	o.errs.reset()
	o.panics.reset()
	o.leaderSince = time.Time{}
}

// sample reads the operator now and records it.
func (o *operator) sample() sample {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := sample{At: time.Now(), CPU: o.cpuDone, Restarts: o.restarts}
	select {
	case <-o.exited:
	default:
		pid := o.cmd.Process.Pid
		if cpu, err := proc.CPUTime(pid); err == nil {
			s.CPU += cpu
		}
		s.RSS, _ = proc.RSS(pid)
		if peak, err := proc.PeakRSS(pid); err == nil {
			o.peakRSS = max(o.peakRSS, peak)
		}
		if text, err := o.scrape(); err == nil {
			o.errs.observe(sumMetric(text, "controller_runtime_reconcile_errors_total"))
			o.panics.observe(sumMetric(text, "controller_runtime_reconcile_panics_total"))
			if sumMetric(text, "leader_election_master_status") >= 1 && o.leaderSince.IsZero() {
				o.leaderSince = s.At
			}
		}
	}
	s.ReconcileErrors, s.Panics = o.errs.total(), o.panics.total()
	o.samples = append(o.samples, s)
	return s
}

func (o *operator) scrape() (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(o.metricsURL)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metrics: %s", res.Status)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	return string(b), err
}

// leading is when the running operator became leader; zero when no
// operator is leading.
func (o *operator) leading() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.leaderSince
}

// peak is the highest RSS of every operator process so far.
func (o *operator) peak() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.peakRSS
}

// samplesBetween is a copy of the samples taken in [from, to].
func (o *operator) samplesBetween(from, to time.Time) []sample {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []sample
	for _, s := range o.samples {
		if !s.At.Before(from) && !s.At.After(to) {
			out = append(out, s)
		}
	}
	return out
}

// stop ends the operator: SIGTERM, SIGKILL after grace.
func (o *operator) stop(grace time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stopping = true
	select {
	case <-o.exited:
		return
	default:
	}
	_ = syscall.Kill(-o.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-o.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-o.cmd.Process.Pid, syscall.SIGKILL)
		<-o.exited
	}
}

// counter totals a Prometheus counter over restarts of the process that
// exports it: a value below the last one means the counter started again
// from zero (as Prometheus's increase() reads it).
type counter struct{ base, last float64 }

func (c *counter) observe(v float64) {
	if v < c.last {
		c.reset()
	}
	c.last = v
}

// reset is called when the process is known to have restarted.
func (c *counter) reset() { c.base, c.last = c.base+c.last, 0 }

func (c *counter) total() float64 { return c.base + c.last }

// sumMetric is the sum of every sample of a metric in the Prometheus text
// format (all label sets), 0 when there is none.
func sumMetric(text, name string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // a comment, another metric, or one whose name only starts with name
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}
