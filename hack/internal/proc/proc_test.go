package proc

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{name: "plain", stat: "42 (turnpike) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3",
			want: 3250 * time.Millisecond},
		{name: "name with spaces and parentheses", stat: "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 2 3",
			want: 30 * time.Millisecond},
		{name: "truncated", stat: "7 (x) R 1 2", wantErr: true},
		{name: "no name", stat: "garbage", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU(tc.stat)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tturnpike\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n"
	for _, tc := range []struct {
		field   string
		want    int64
		wantErr bool
	}{
		{field: "VmRSS", want: 10240 * 1024},
		{field: "VmHWM", want: 20480 * 1024},
		{field: "VmSwap", wantErr: true},
	} {
		got, err := parseStatusKB(status, tc.field)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseStatusKB(%s) = %d, %v; want %d, error %v", tc.field, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestSelf reads this test process: a real /proc, not a fixture.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := CPUTime(pid); err != nil {
		t.Fatal(err)
	}
	rss, err := RSS(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("RSS = %d, %v", rss, err)
	}
	peak, err := PeakRSS(pid)
	if err != nil || peak < rss {
		t.Fatalf("PeakRSS = %d, %v; below RSS %d", peak, err, rss)
	}
}

func TestParseStatParentAndGroup(t *testing.T) {
	for _, tc := range []struct {
		name, stat       string
		wantPPID, wantPG int
		wantErr          bool
	}{
		{name: "plain", stat: "42 (turnpike) S 1 40 40 0 -1", wantPPID: 1, wantPG: 40},
		{name: "name with spaces and parentheses", stat: "7 (a (b) 3 4) R 5 6 6", wantPPID: 5, wantPG: 6},
		{name: "truncated", stat: "7 (x) R 1", wantErr: true},
		{name: "no name", stat: "garbage", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ppid, pgid, err := parseStatParentAndGroup(tc.stat)
			if (err != nil) != tc.wantErr || ppid != tc.wantPPID || pgid != tc.wantPG {
				t.Fatalf("parseStatParentAndGroup = %d, %d, %v; want %d, %d, error %v", ppid, pgid, err, tc.wantPPID, tc.wantPG, tc.wantErr)
			}
		})
	}
}
