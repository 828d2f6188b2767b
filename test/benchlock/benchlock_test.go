package benchlock

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecondWaits: while one benchmark holds the lock a second one waits,
// naming the first, and goes on once the first releases it.
func TestSecondWaits(t *testing.T) {
	Path = filepath.Join(t.TempDir(), "lock")
	releaseFirst, err := Hold(&bytes.Buffer{}, "first")
	if err != nil {
		t.Fatal(err)
	}
	var said bytes.Buffer
	got := make(chan error, 1)
	go func() {
		release, err := Hold(&said, "second")
		if err == nil {
			release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the second took the lock while the first held it (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	releaseFirst()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second still waits after the first released the lock")
	}
	if !strings.Contains(said.String(), "second: waiting for another benchmark to end (first, pid") {
		t.Errorf("the second said %q", said.String())
	}
}
