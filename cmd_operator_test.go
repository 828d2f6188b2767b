package main

import (
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
