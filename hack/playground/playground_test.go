package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/hack/internal/proc"
	"github.com/turnpike-dev/turnpike/probe"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

// The sample TurnServer's ports on this machine: listeners and internal.
var sampleTCPPorts, sampleUDPPorts = []int{3478, 5349, 9641, 9642}, []int{3478}

// TestMakeRun runs `make run`'s script with a kubeconfig that reaches no
// cluster, so it starts the playground; waits for the probe command it
// prints to succeed; then ends it and checks that nothing is left: no
// process, no port, no temp dir. It ends it twice over: with Ctrl-C (SIGINT
// to the process group, as a terminal does), and with SIGKILL to the
// playground's process alone, which no cleanup code of its own can catch
// (as when `make run | tee log` loses its pipe, or a terminal dies).
func TestMakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane, an operator and a relay")
	}
	for _, ending := range []struct {
		name      string
		stop      func(pid int) error
		wantClean bool // exit status 0
	}{
		{"Ctrl-C", func(pid int) error { return syscall.Kill(-pid, syscall.SIGINT) }, true},
		{"SIGKILL", func(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }, false},
	} {
		t.Run(ending.name, func(t *testing.T) {
			testMakeRunEnding(t, ending.stop, ending.wantClean)
		})
	}
}

func testMakeRunEnding(t *testing.T, stop func(pid int) error, wantClean bool) {
	hostIP, err := probe.LocalPeerAddress(false)
	if err != nil {
		t.Fatalf("the playground needs a non-loopback IPv4 address: %v", err)
	}
	for _, p := range sampleTCPPorts {
		if !tcpFree(hostIP.String(), p) {
			t.Fatalf("TCP port %d is in use on %s before the test: the playground needs the sample's ports", p, hostIP)
		}
	}

	root := testenv.RepoRoot()
	cmd := exec.Command(filepath.Join(root, "hack", "run.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "no-cluster"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr lockedBuilder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// run.sh execs the playground: this pid is the playground's, and its group.
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Whatever happens, leave nothing behind.
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })

	lines := make(chan string, 100)
	var output lockedBuilder
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			output.WriteString(scanner.Text() + "\n")
			lines <- scanner.Text()
		}
		close(lines)
	}()

	// Building the binaries and starting everything: bounded, generously
	// for a busy 2-core machine.
	probeCmd, stateDir := waitForProbeLine(t, lines, 8*time.Minute)
	if probeCmd == "" {
		t.Fatalf("make run printed no probe command:\n%s\nstderr:\n%s", output.String(), stderr.String())
	}
	t.Logf("probe command: %s", probeCmd)
	if err := runProbeUntilOK(root, probeCmd, 10); err != nil {
		t.Errorf("the printed probe command never succeeded: %v", err)
	}
	// The playground's descendants (operator, kube-apiserver, etcd) run in
	// process groups of their own; note them while they run.
	children := descendantsOf(t, pgid)
	t.Cleanup(func() {
		for _, child := range children {
			if alive(child) {
				_ = syscall.Kill(child.pid, syscall.SIGKILL)
			}
		}
	})
	controlPlaneDirs := controlPlaneDirs(t, children)

	if err := stop(pgid); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if wantClean && err != nil {
			t.Errorf("make run exited with %v, want 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("make run still runs 2 minutes after it was stopped:\n%s", output.String())
	}
	// What the playground started may take its time to stop (the relay
	// drains, the operator and the control plane stop in order).
	left := waitNothingLeft(2*time.Minute, func() []string {
		return leftovers(t, pgid, stateDir, hostIP.String(), children, controlPlaneDirs)
	})
	for range lines { // the rest of the output, once every writer is gone
	}
	t.Logf("make run output:\n%s\nstderr:\n%s", output.String(), stderr.String())
	for _, l := range left {
		t.Error(l)
	}
}

// descendantsOf lists the processes below pid: its children, theirs, and so on.
func descendantsOf(t *testing.T, pid int) []process {
	t.Helper()
	all := processes(t)
	var out []process
	parents := map[int]bool{pid: true}
	for found := true; found; {
		found = false
		for _, p := range all {
			if parents[p.ppid] && !parents[p.pid] {
				parents[p.pid] = true
				out = append(out, p)
				found = true
			}
		}
	}
	if len(out) < 4 {
		t.Errorf("the playground has %d processes below it, want the playground proper, the operator, kube-apiserver and etcd: %v", len(out), out)
	}
	return out
}

// alive reports whether p still runs (a reused pid has another command line).
func alive(p process) bool {
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.pid), "cmdline"))
	return err == nil && string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})) == p.cmdline
}

// controlPlaneDirs are the temp dirs of the playground's kube-apiserver and
// etcd (envtest makes them), read from their command lines.
func controlPlaneDirs(t *testing.T, children []process) []string {
	t.Helper()
	var dirs []string
	for _, p := range children {
		for _, arg := range strings.Fields(p.cmdline) {
			for _, flag := range []string{"--data-dir=", "--cert-dir="} {
				if dir, ok := strings.CutPrefix(arg, flag); ok {
					dirs = append(dirs, dir)
				}
			}
		}
	}
	if len(dirs) < 2 {
		t.Errorf("found the control plane dirs %v in the process group, want etcd's and kube-apiserver's", dirs)
	}
	return dirs
}

// waitForProbeLine reads the playground's output until it prints the probe
// command, and returns it and the playground's temp dir.
func waitForProbeLine(t *testing.T, lines <-chan string, timeout time.Duration) (probeCmd, stateDir string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				return "", stateDir
			}
			if dir, found := strings.CutPrefix(line, "playground: state and logs in "); found {
				stateDir = strings.Fields(dir)[0]
			}
			if cmd, found := strings.CutPrefix(line, ProbeLinePrefix); found {
				return cmd, stateDir
			}
		case <-deadline:
			t.Fatalf("no probe command after %s", timeout)
		}
	}
}

// runProbeUntilOK runs the probe command (a shell line) until it succeeds,
// at most attempts times, a second apart.
func runProbeUntilOK(dir, line string, attempts int) error {
	var err error
	for i := 0; i < attempts; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-c", line)
		cmd.Dir = dir
		var out []byte
		out, err = cmd.CombinedOutput()
		cancel()
		if err == nil && bytes.Contains(out, []byte("\nOK\n")) {
			return nil
		}
		err = fmt.Errorf("%v: %s", err, out)
		time.Sleep(time.Second)
	}
	return err
}

// waitNothingLeft polls leftovers until it finds none or timeout passes,
// and returns what is left then.
func waitNothingLeft(timeout time.Duration, leftovers func() []string) []string {
	deadline := time.Now().Add(timeout)
	for {
		left := leftovers()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// leftovers is what the playground left behind: a process of its group, of
// those it started, or mentioning its state dir (the operator runs in its
// own group); a sample port held; the state dir or a control plane dir.
func leftovers(t *testing.T, pgid int, stateDir, hostIP string, children []process, dirs []string) []string {
	var left []string
	for _, p := range processes(t) {
		if p.pgid == pgid || (stateDir != "" && strings.Contains(p.cmdline, stateDir)) {
			left = append(left, fmt.Sprintf("process left running: pid %d (group %d): %s", p.pid, p.pgid, p.cmdline))
		}
	}
	for _, child := range children {
		if alive(child) {
			left = append(left, fmt.Sprintf("child process left running: pid %d: %s", child.pid, child.cmdline))
		}
	}
	for _, p := range sampleTCPPorts {
		if !tcpFree(hostIP, p) {
			left = append(left, fmt.Sprintf("TCP port %d still in use on %s", p, hostIP))
		}
	}
	for _, p := range sampleUDPPorts {
		if !udpFree(hostIP, p) {
			left = append(left, fmt.Sprintf("UDP port %d still in use on %s", p, hostIP))
		}
	}
	if stateDir == "" {
		left = append(left, "the playground did not say where its state is")
	}
	for _, dir := range append([]string{stateDir}, dirs...) {
		if _, err := os.Stat(dir); dir != "" && !os.IsNotExist(err) {
			left = append(left, fmt.Sprintf("dir %s still exists (%v)", dir, err))
		}
	}
	return left
}

// lockedBuilder collects output written by one goroutine and read by another.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.WriteString(string(p))
	return len(p), nil
}

func (l *lockedBuilder) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type process struct {
	pid, ppid, pgid int
	cmdline         string
}

// processes lists every process from /proc.
func processes(t *testing.T) []process {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, pgid, err := proc.ParentAndGroup(pid)
		if err != nil {
			continue // gone meanwhile
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, process{pid: pid, ppid: ppid, pgid: pgid, cmdline: string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))})
	}
	return out
}

func tcpFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func udpFree(host string, port int) bool {
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}
