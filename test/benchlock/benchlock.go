// Package benchlock keeps two of the project's benchmarks from measuring
// at once on one machine, where each would read the other's load as the
// relay's or the operator's cost. A benchmark holds an exclusive flock on
// one file while it runs; a second one waits for it, and says so.
package benchlock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Path is the lock file every benchmark shares.
var Path = filepath.Join(os.TempDir(), "turnpike-bench.lock")

// Hold takes the lock for the benchmark called name, first telling w which
// benchmark it waits for when another holds it. The lock is the process's
// until release or its exit (the kernel drops it then).
func Hold(w io.Writer, name string) (release func(), err error) {
	f, err := os.OpenFile(Path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("benchmark lock: %w", err)
	}
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("benchmark lock %s: %w", Path, err)
		}
		holder, _ := os.ReadFile(Path)
		fmt.Fprintf(w, "%s: waiting for another benchmark to end (%s holds %s)\n", name, strings.TrimSpace(string(holder)), Path)
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("benchmark lock %s: %w", Path, err)
		}
	}
	// Who holds it, for the next one to name.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%s, pid %d\n", name, os.Getpid())), 0)
	return func() { f.Close() }, nil
}
