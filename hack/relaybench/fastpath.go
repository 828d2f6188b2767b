package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The fast path's metrics on turnpike's /metrics: a gauge that is 1 while
// the TC program is attached, and the packets it relayed per direction.
// The bench only sends client → peer, so that is the counter it reads.
const (
	fastPathActiveMetric  = "turnpike_relay_fastpath_active"
	fastPathPacketsMetric = "turnpike_relay_fastpath_packets_total"
	fastPathToPeer        = `direction="client_to_peer"`
)

var metricsClient = &http.Client{Timeout: 2 * time.Second}

// scrape reads a relay's /metrics.
func scrape(url string) (string, error) {
	res, err := metricsClient.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, res.Status)
	}
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// metricValue finds a sample in Prometheus text format: the metric name,
// and when label is set, a series whose labels include it (`key="value"`).
func metricValue(text, name, label string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if label != "" {
			labels, _, ok := strings.Cut(rest, "}")
			if !ok || !strings.Contains(labels, label) {
				continue
			}
			rest = rest[len(labels)+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err == nil {
			return v, true
		}
	}
	return 0, false
}

// fastPathStatus is what a fast-path relay's metrics say: whether the
// program is attached, and how many client → peer packets it has relayed.
func fastPathStatus(r *relayProc) (active bool, toPeer float64, err error) {
	text, err := scrape(r.metrics)
	if err != nil {
		return false, 0, err
	}
	v, ok := metricValue(text, fastPathActiveMetric, "")
	if !ok {
		return false, 0, errors.New(fastPathActiveMetric + " is not exported")
	}
	toPeer, _ = metricValue(text, fastPathPacketsMetric, fastPathToPeer)
	return v == 1, toPeer, nil
}

// fastPathPoll is how often turnpike adds the kernel's per-CPU counters to
// its metrics (offloadPollInterval in relay/offload.go), plus a margin.
const fastPathPoll = 1100 * time.Millisecond

// fastPathSettled is fastPathStatus once the relay's metrics include every
// packet sent so far. The program counts as it relays, in the sender's
// system call, so the first poll after sending ended has them all: wait
// until the counter moves, or a whole poll interval has passed without it
// moving. This also leaves the counter settled for the next run's "before".
func fastPathSettled(r *relayProc) (active bool, toPeer float64, err error) {
	active, first, err := fastPathStatus(r)
	for start := time.Now(); err == nil && time.Since(start) < fastPathPoll; {
		time.Sleep(100 * time.Millisecond)
		if active, toPeer, err = fastPathStatus(r); err == nil && toPeer != first {
			return active, toPeer, nil
		}
	}
	return active, first, err
}

// checkFastPath reports whether a fast-path relay has its program attached
// (waiting up to two seconds for it), and if not, prints why as far as the
// relay's metrics and log say.
func checkFastPath(r *relayProc) bool {
	var err error
	var active bool
	for range 20 {
		if active, _, err = fastPathStatus(r); active {
			fmt.Printf("%s: fast path active (%s 1)\n", r.name, fastPathActiveMetric)
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		fmt.Printf("%s: fast path NOT active: %v\n", r.name, err)
	} else {
		fmt.Printf("%s: fast path NOT active (%s is not 1)\n", r.name, fastPathActiveMetric)
	}
	lines := r.log.fastPathLines()
	if len(lines) == 0 {
		fmt.Printf("%s: no log line mentions the fast path\n", r.name)
	}
	for _, l := range lines {
		fmt.Printf("%s log: %s\n", r.name, l)
	}
	fmt.Printf("%s: its rows are marked \"inactive\": the userspace relay did the work, and they do not count as the fast path\n", r.name)
	return false
}

// relayLog takes a turnpike relay's log (slog text on stderr): it keeps the
// lines about the fast path, to show when the program did not attach, and
// passes warnings and errors on to stderr, prefixed with the relay's name.
type relayLog struct {
	name string

	mu       sync.Mutex
	partial  []byte
	fastPath []string
}

const maxFastPathLines = 50

func (l *relayLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = append(l.partial[:0], l.partial[i+1:]...)
		lower := strings.ToLower(line)
		if (strings.Contains(lower, "fast") || strings.Contains(lower, "bpf")) && len(l.fastPath) < maxFastPathLines {
			l.fastPath = append(l.fastPath, line)
		}
		if !strings.Contains(line, "level=INFO") && !strings.Contains(line, "level=DEBUG") {
			fmt.Fprintf(os.Stderr, "%s: %s\n", l.name, line)
		}
	}
	return len(p), nil
}

func (l *relayLog) fastPathLines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.fastPath...)
}

// relayUID is the user turnpike-ebpf's relay runs as: the relay pod's
// (controllers/render), which holds no capability. Only the agent is root.
const relayUID = 65532

// startAgent starts the fast-path agent for relay r, as root, reading the
// relay.yaml in dir, and waits for its socket, so the relay's first dial
// finds it. It hands dir to relayUID: the relay reads its files there, and
// the directories above it only let it pass; the agent may pass through
// dir and read relay.yaml, as it reads a mounted ConfigMap, since it has no
// CAP_DAC_OVERRIDE. It returns the socket's path.
func startAgent(o options, r *relayProc, binary, dir string) (string, error) {
	if err := giveTo(dir, relayUID); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return "", err
	}
	if err := os.Chmod(filepath.Join(dir, "relay.yaml"), 0o644); err != nil {
		return "", err
	}
	run := filepath.Join(dir, "run") // root's, as the pod's emptyDir: the relay cannot replace the socket
	if err := os.Mkdir(run, 0o755); err != nil {
		return "", err
	}
	socket := filepath.Join(run, "fastpath.sock")
	// The pod's fastpath container: root with BPF, NET_ADMIN and PERFMON
	// only (controllers/render), which is what the bounding set leaves root.
	r.agent = command(o, "setpriv", "--bounding-set=-all,+bpf,+net_admin,+perfmon", "--inh-caps=-all", "--",
		binary, "fastpath", "--config", filepath.Join(dir, "relay.yaml"), "--socket", socket, "--relay-uid", strconv.Itoa(relayUID))
	r.agent.Stderr = &relayLog{name: r.name + " agent"}
	if err := r.agent.Start(); err != nil {
		return "", err
	}
	for range 100 {
		if _, err := os.Stat(socket); err == nil {
			return socket, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopAgent(r)
	return "", fmt.Errorf("%s: the fast-path agent made no socket %s in 5 s", r.name, socket)
}

// stopAgent stops r's fast-path agent, if it has one.
func stopAgent(r *relayProc) {
	if r.agent != nil {
		stopProcess(r.agent)
	}
}

// giveTo makes dir and the files in it uid's, and lets uid pass through
// the directories above it up to the system's temporary directory (made
// 0700 by os.MkdirTemp).
func giveTo(dir string, uid int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Chown(filepath.Join(dir, e.Name()), uid, uid); err != nil {
			return err
		}
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		return err
	}
	for p := filepath.Dir(dir); strings.HasPrefix(p, os.TempDir()+"/"); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			return err
		}
	}
	return nil
}

// privileges is a process's user and effective capabilities, from
// /proc/PID/status, to show that the relay holds none.
func privileges(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "Uid" || k == "CapEff") {
			out = append(out, k+" "+strings.Fields(v)[0])
		}
	}
	return strings.Join(out, ", ")
}

// copyForRelayUser copies binary into dir, mode 0755, so relayUID can run
// it wherever the original lies (bench.sh builds it in a directory only
// root may enter).
func copyForRelayUser(binary, dir string) (string, error) {
	b, err := os.ReadFile(binary)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, filepath.Base(binary))
	return path, os.WriteFile(path, b, 0o755)
}
