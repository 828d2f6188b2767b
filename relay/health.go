package relay

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// internalHost is the address of the metrics and health listener: never the
// public TURN address. internal.address, else HOST_IP, else 127.0.0.1.
func (r *Relay) internalHost() string {
	switch {
	case r.cfg.Internal.Address != "":
		return r.cfg.Internal.Address
	case r.env.hostIP.IsValid():
		return r.env.hostIP.String()
	}
	return "127.0.0.1"
}

// serveInternal starts /metrics on internal.metricsPort and /livez, /readyz
// and /status on internal.healthPort (one listener when they are equal).
func (r *Relay) serveInternal() (closeAll func(), err error) {
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", promhttp.HandlerFor(r.metrics.registry, promhttp.HandlerOpts{Registry: r.metrics.registry}))
	healthMux := metricsMux
	if r.cfg.Internal.HealthPort != r.cfg.Internal.MetricsPort {
		healthMux = http.NewServeMux()
	}
	healthMux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	healthMux.HandleFunc("GET /readyz", r.serveReadyz)
	healthMux.HandleFunc("GET /status", r.serveStatus)

	var servers []*http.Server
	closeAll = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(ctx)
		}
	}
	ports := []int{r.cfg.Internal.MetricsPort}
	muxes := []*http.ServeMux{metricsMux}
	if healthMux != metricsMux {
		ports = append(ports, r.cfg.Internal.HealthPort)
		muxes = append(muxes, healthMux)
	}
	for i, port := range ports {
		addr := net.JoinHostPort(r.internalHost(), strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, err
		}
		s := &http.Server{Handler: muxes[i], ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, s)
		go func() {
			if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				r.log.Error("internal listener failed", "address", addr, "error", err.Error())
			}
		}()
		r.log.Info("internal listener", "address", addr)
	}
	return closeAll, nil
}

func (r *Relay) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	if !r.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (r *Relay) serveStatus(w http.ResponseWriter, _ *http.Request) {
	st := r.current()
	var stun *config.STUNStatus
	if s := st.cfg.Addresses.STUN; s != nil {
		stun = r.stun.status(s.Servers)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(config.Status{
		Version:               r.opts.Version,
		ConfigGeneration:      r.gen.Load(),
		CredentialsGeneration: st.creds.generation,
		ExternalAddresses:     st.addrs.advertisedList(),
		ExternalAddressSource: st.addrs.source(),
		Allocations:           r.AllocationCount(),
		Ready:                 r.Ready(),
		Draining:              r.draining.Load(),
		SocketHash:            r.cfg.SocketHash(),
		FastPath:              r.fastPathStatus(),
		STUN:                  stun,
		BehaviorDiscovery:     r.discoveryStatus.Load(),
	})
}
