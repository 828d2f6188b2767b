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

	"github.com/turnpike-dev/turnpike/probe"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

// The sample TurnServer's ports on this machine: listeners and internal.
var sampleTCPPorts, sampleUDPPorts = []int{3478, 5349, 9641, 9642}, []int{3478}

// TestMakeRun runs `make run`'s script with a kubeconfig that reaches no
// cluster, so it starts the playground; waits for the probe command it
// prints to succeed; then presses Ctrl-C (SIGINT to the process group, as a
// terminal does) and checks that nothing is left: no process, no port, no
// temp dir.
func TestMakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane, an operator and a relay")
	}
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
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
	// The playground's children (operator, kube-apiserver, etcd) run in
	// process groups of their own; note them while they run.
	children := childrenOf(t, pgid)
	t.Cleanup(func() {
		for _, child := range children {
			if alive(child) {
				_ = syscall.Kill(child.pid, syscall.SIGKILL)
			}
		}
	})
	controlPlaneDirs := controlPlaneDirs(t, children)

	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("make run exited with %v after Ctrl-C, want 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("make run still runs 2 minutes after Ctrl-C:\n%s", output.String())
	}
	for range lines { // the rest of the output
	}
	t.Logf("make run output:\n%s", output.String())

	checkNothingLeft(t, pgid, stateDir, hostIP.String())
	for _, child := range children {
		if alive(child) {
			t.Errorf("child process left running: pid %d: %s", child.pid, child.cmdline)
		}
	}
	for _, dir := range controlPlaneDirs {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("control plane dir %s still exists (%v)", dir, err)
		}
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []process {
	t.Helper()
	var out []process
	for _, p := range processes(t) {
		if p.ppid == pid {
			out = append(out, p)
		}
	}
	if len(out) < 3 {
		t.Errorf("the playground has %d child processes, want the operator, kube-apiserver and etcd: %v", len(out), out)
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

// checkNothingLeft: no process of the group or mentioning the playground's
// state dir (the operator runs in its own group), no sample port held, and
// the state dir removed.
func checkNothingLeft(t *testing.T, pgid int, stateDir, hostIP string) {
	t.Helper()
	for _, p := range processes(t) {
		if p.pgid == pgid || (stateDir != "" && strings.Contains(p.cmdline, stateDir)) {
			t.Errorf("process left running: pid %d (group %d): %s", p.pid, p.pgid, p.cmdline)
		}
	}
	for _, p := range sampleTCPPorts {
		if !tcpFree(hostIP, p) {
			t.Errorf("TCP port %d still in use on %s", p, hostIP)
		}
	}
	for _, p := range sampleUDPPorts {
		if !udpFree(hostIP, p) {
			t.Errorf("UDP port %d still in use on %s", p, hostIP)
		}
	}
	if stateDir == "" {
		t.Error("the playground did not say where its state is")
	} else if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Errorf("state dir %s still exists (%v)", stateDir, err)
	}
}

// lockedBuilder collects output written by one goroutine and read by another.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
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
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// The fields after the command name (in parentheses, may hold spaces):
		// state ppid pgrp ...
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		pgid, _ := strconv.Atoi(fields[2])
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
