package main

import (
	"errors"
	"math"
	"runtime/debug"
	"testing"

	"k8s.io/client-go/rest"
)

func TestSetRateLimit(t *testing.T) {
	tests := []struct {
		qps     float64
		burst   int
		wantErr bool
	}{
		{defaultKubeAPIQPS, defaultKubeAPIBurst, false},
		{0.5, 1, false},
		{0, 10, true},
		{-1, 10, true},
		{10, 0, true},
	}
	for _, tt := range tests {
		cfg := &rest.Config{}
		err := setRateLimit(cfg, tt.qps, tt.burst)
		if (err != nil) != tt.wantErr {
			t.Errorf("setRateLimit(%v, %d) error %v, want error %v", tt.qps, tt.burst, err, tt.wantErr)
			continue
		}
		if err == nil && (cfg.QPS != float32(tt.qps) || cfg.Burst != tt.burst) {
			t.Errorf("setRateLimit(%v, %d) set QPS %v burst %d", tt.qps, tt.burst, cfg.QPS, cfg.Burst)
		}
	}
}

func TestCheckPprofAddr(t *testing.T) {
	for addr, wantErr := range map[string]bool{
		"":               false,
		"127.0.0.1:6060": false,
		"[::1]:6060":     false,
		":6060":          true,
		"0.0.0.0:6060":   true,
		"10.0.0.1:6060":  true,
		"localhost:6060": true, // a name could resolve elsewhere
		"127.0.0.1":      true,
	} {
		if err := checkPprofAddr(addr); (err != nil) != wantErr {
			t.Errorf("checkPprofAddr(%q) = %v, want error %v", addr, err, wantErr)
		}
	}
}

// TestSetSoftMemoryLimit: 90 % of the container's limit, from cgroup v2 or
// v1; none when the cgroup has none or $GOMEMLIMIT was given.
func TestSetSoftMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	tests := []struct {
		name       string
		files      map[string]string
		gomemlimit string
		want       int64
	}{
		{"v2", map[string]string{"/sys/fs/cgroup/memory.max": "268435456\n"}, "", 241591905},
		{"v2 unlimited", map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, "", math.MaxInt64},
		{"v1", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n"}, "", 241591905},
		{"v1 unlimited", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, "", math.MaxInt64},
		{"no cgroup", nil, "", math.MaxInt64},
		{"GOMEMLIMIT wins", map[string]string{"/sys/fs/cgroup/memory.max": "268435456\n"}, "100MiB", 100 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tt.gomemlimit)
			debug.SetMemoryLimit(math.MaxInt64)
			if tt.gomemlimit != "" {
				debug.SetMemoryLimit(100 << 20) // as the runtime does at start from $GOMEMLIMIT
			}
			read := func(path string) ([]byte, error) {
				if data, ok := tt.files[path]; ok {
					return []byte(data), nil
				}
				return nil, errors.New("no such file")
			}
			if got := setSoftMemoryLimit(read); got != tt.want {
				t.Errorf("limit %d, want %d", got, tt.want)
			}
		})
	}
}
