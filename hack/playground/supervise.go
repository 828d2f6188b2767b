package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/turnpike-dev/turnpike/hack/internal/proc"
)

// stateDirEnv hands the supervisor's temp dir to the playground it runs;
// it also marks that process as the playground proper.
const stateDirEnv = "TURNPIKE_PLAYGROUND_DIR"

// supervise runs the playground as its own child and cleans up after it,
// however it ends. The playground's children (kube-apiserver and etcd,
// started by envtest in process groups of their own, and the operator)
// would otherwise outlive a playground killed by SIGKILL or by SIGPIPE,
// and its temp dir would stay. So:
//
//   - the playground gets SIGTERM when the supervisor dies (parent-death
//     signal), and then stops everything in order, as on Ctrl-C;
//   - the supervisor is a child subreaper: processes the playground leaves
//     behind become the supervisor's children, and it kills them;
//   - the playground and everything it starts keep their temp files (TMPDIR,
//     where envtest puts etcd's data and the API server's certificates)
//     inside one dir, which the supervisor removes last.
//
// The supervisor does nothing else, so it outlives nothing: it returns
// right after the playground and its leftovers are gone.
func supervise() int {
	// A terminal's signals reach both processes (one process group); other
	// senders know only this pid, so pass them on. Duplicates are harmless.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	signal.Ignore(syscall.SIGPIPE) // `make run | tee log`: tee may die first

	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "playground: becoming a subreaper:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "turnpike-playground-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "playground:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "playground:", err)
		return 1
	}

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "playground:", err)
		return 1
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), stateDirEnv+"="+dir, "TMPDIR="+tmp)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The signal is sent when the thread that started the child ends; Go
	// ends threads only for goroutines locked to them, which this one is not.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "playground:", err)
		return 1
	}
	exited := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-signals:
				_ = cmd.Process.Signal(s)
			case <-exited:
				return
			}
		}
	}()
	_ = cmd.Wait()
	close(exited)
	killOrphans()
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	return 1 // killed by a signal
}

// killOrphans kills and reaps the processes the playground left behind,
// which the kernel made the subreaper's children, until none is left.
func killOrphans() {
	killed := map[int]bool{}
	for {
		for _, pid := range childPids(os.Getpid()) {
			if !killed[pid] {
				fmt.Fprintf(os.Stderr, "playground: killing pid %d, left behind\n", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed[pid] = true
			}
		}
		var status syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &status, 0, nil); errors.Is(err, syscall.ECHILD) {
			return
		}
	}
}

// childPids lists the processes whose parent is pid.
func childPids(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, err := proc.ParentAndGroup(child); err == nil && ppid == pid {
			out = append(out, child)
		}
	}
	return out
}
