package relay

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Directions and transports of relayed traffic (metric labels).
const (
	dirToPeer   = "client_to_peer"
	dirFromPeer = "peer_to_client"
)

// Results of an Allocate request (label of turnpike_relay_allocations_total).
const (
	allocSuccess  = "success"
	allocQuota    = "quota"
	allocDraining = "draining"
)

// metrics holds the relay's collectors in their own registry, so /metrics
// shows exactly the relay (plus Go and process collectors) and tests can run
// several relays in one process.
type metrics struct {
	registry *prometheus.Registry

	allocations     *prometheus.CounterVec
	authFailures    *prometheus.CounterVec
	peersDenied     *prometheus.CounterVec
	quotaRejections *prometheus.CounterVec
	packets         *prometheus.CounterVec
	bytes           *prometheus.CounterVec
	reloads         *prometheus.CounterVec
	lastReload      prometheus.Gauge
	credGeneration  prometheus.Gauge
	configGen       prometheus.Gauge
	draining        prometheus.Gauge
	addressInfo     *prometheus.GaugeVec
	stunDiscoveries *prometheus.CounterVec
	stunLastSuccess prometheus.Gauge
	stunBindings    *prometheus.CounterVec
	fastPathActive  prometheus.Gauge
	fastPathPackets *prometheus.CounterVec
	// fastPathQueueFull counts channels left in userspace because the
	// queue of writes to the fast-path agent was full.
	fastPathQueueFull prometheus.Counter

	// The edge: what clients cost before they authenticate.
	connsRefused   *prometheus.CounterVec
	connsClosed    *prometheus.CounterVec
	framesRejected *prometheus.CounterVec
	// requestsRefused counts requests the gate answered or dropped itself.
	requestsRefused *prometheus.CounterVec
	authThrottled   prometheus.Counter
	listenersDead   prometheus.Gauge
}

// trafficCounters are the counter children for one direction and transport,
// looked up once so the per-packet path only does atomic adds.
type trafficCounters struct {
	packets prometheus.Counter
	bytes   prometheus.Counter
}

func newMetrics(version string, allocs *allocTracker, conns *connLimiter) *metrics {
	m := &metrics{registry: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.registry.MustRegister(c) }
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnpike_relay_" + name, Help: help}, labels)
		f(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "turnpike_relay_" + name, Help: help})
		f(g)
		return g
	}
	gaugeFunc := func(name, help string, fn func() float64) {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "turnpike_relay_" + name, Help: help}, fn))
	}

	m.allocations = counterVec("allocations_total", "Allocate requests that passed authentication, by result.", "result")
	m.authFailures = counterVec("auth_failures_total", "Failed authentications, by reason.", "reason")
	m.peersDenied = counterVec("peers_denied_total", "Permissions, channel binds and connects refused by the peer policy, by reason.", "reason")
	m.quotaRejections = counterVec("quota_rejections_total", "Requests refused or packets dropped by a quota, by quota.", "quota")
	m.packets = counterVec("relayed_packets_total", "Datagrams (UDP) or reads/writes (TCP) relayed, by direction and transport; includes the fast path's.", "direction", "transport")
	m.bytes = counterVec("relayed_bytes_total", "Payload bytes relayed, by direction and transport; includes the fast path's.", "direction", "transport")
	m.reloads = counterVec("config_reloads_total", "Reloads of relay.yaml and credentials.yaml, by result.", "result")
	m.lastReload = gauge("config_last_reload_success_timestamp_seconds", "Unix time of the last successful config load.")
	m.credGeneration = gauge("credentials_generation", "Generation of the credential set in use (credentials.yaml).")
	m.configGen = gauge("config_generation", "How many times this process loaded a new config (starts at 1).")
	m.draining = gauge("draining", "1 while the relay drains before exiting.")
	m.addressInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turnpike_relay_external_address_info",
		Help: "The address new allocations advertise (XOR-RELAYED-ADDRESS), one per IP family, and its source; always 1."}, []string{"address", "source"})
	f(m.addressInfo)
	m.stunDiscoveries = counterVec("stun_discovery_total", "STUN discovery lookups (one per IP family and round), by result.", "result")
	m.fastPathActive = gauge("fastpath_active", "1 while the eBPF fast path is attached and relaying bound UDP channels.")
	m.fastPathPackets = counterVec("fastpath_packets_total", "Datagrams the fast path relayed in the kernel, by direction (also in relayed_packets_total).", "direction")
	m.fastPathQueueFull = prometheus.NewCounter(prometheus.CounterOpts{Name: "turnpike_relay_fastpath_queue_full_total",
		Help: "Channels left in userspace because the queue of writes to the fast-path agent was full."})
	f(m.fastPathQueueFull)
	m.stunLastSuccess = gauge("stun_discovery_last_success_timestamp_seconds", "Unix time of the last successful STUN discovery lookup.")
	m.stunBindings = counterVec("stun_binding_total", "STUN Binding requests from clients, by protocol version (rfc3489: classic, without the magic cookie) and result (answered, error, dropped).", "version", "result")

	m.connsRefused = counterVec("connections_refused_total", "TCP and TLS connections refused at accept, by reason (per_source, total: a connection limit; accept_error: accept failed and was retried).", "reason")
	m.connsClosed = counterVec("connections_closed_total", "TCP and TLS connections the relay closed, by reason (first_timeout, idle, bad_frame, tls_handshake).", "reason")
	m.framesRejected = counterVec("frames_rejected_total", "Datagrams and stream frames refused before the TURN engine saw them, by reason.", "reason")
	m.requestsRefused = counterVec("requests_refused_total", "STUN requests the request gate answered with an error or dropped before the TURN engine saw them, by reason.", "reason")
	m.authThrottled = prometheus.NewCounter(prometheus.CounterOpts{Name: "turnpike_relay_auth_throttled_total",
		Help: "Requests dropped unanswered because their client address failed authentication too often."})
	f(m.authThrottled)
	m.listenersDead = gauge("listeners_failed", "Listener sockets whose accept or read loop stopped on an error; /readyz fails while it is above 0.")
	gaugeFunc("connections_open", "TCP and TLS client connections open.", func() float64 { return float64(conns.open()) })
	gaugeFunc("allocations_active", "Allocations currently open.", func() float64 { a, _, _ := allocs.totals(); return float64(a) })
	gaugeFunc("permissions_active", "Permissions currently installed across all allocations.", func() float64 { _, p, _ := allocs.totals(); return float64(p) })
	gaugeFunc("channels_active", "Channel bindings currently installed across all allocations.", func() float64 { _, _, c := allocs.totals(); return float64(c) })

	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turnpike_relay_build_info", Help: "Build information; always 1."}, []string{"version", "goversion"})
	f(build)
	build.WithLabelValues(version, runtime.Version()).Set(1)

	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.initLabels()
	return m
}

// initLabels creates every known series at zero, so dashboards and alerts
// see 0 instead of "no data" before the first event.
func (m *metrics) initLabels() {
	for vec, values := range map[*prometheus.CounterVec][]string{
		m.allocations:     {allocSuccess, allocQuota, allocDraining},
		m.authFailures:    authFailureReasons,
		m.peersDenied:     peerDenyReasons,
		m.quotaRejections: quotaKinds,
		m.connsRefused:    connRefuseReasons,
		m.connsClosed:     connCloseReasons,
		m.requestsRefused: requestRefusedReasons,
		m.framesRejected:  frameRejectReasons,
	} {
		for _, v := range values {
			vec.WithLabelValues(v)
		}
	}
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
		m.stunDiscoveries.WithLabelValues(r)
	}
	for _, d := range []string{dirToPeer, dirFromPeer} {
		for _, t := range []string{"udp", "tcp"} {
			m.traffic(d, t)
		}
		m.fastPathPackets.WithLabelValues(d)
	}
	for _, v := range stunVersions {
		for _, r := range bindingResults {
			m.stunBindings.WithLabelValues(v, r)
		}
	}
}

func (m *metrics) traffic(direction, transport string) trafficCounters {
	return trafficCounters{
		packets: m.packets.WithLabelValues(direction, transport),
		bytes:   m.bytes.WithLabelValues(direction, transport),
	}
}

// setAddressInfo shows the advertised addresses in
// turnpike_relay_external_address_info, replacing the previous ones.
func (m *metrics) setAddressInfo(a addresses) {
	m.addressInfo.Reset()
	for _, x := range a.advertised {
		if x.addr.IsValid() {
			m.addressInfo.WithLabelValues(x.addr.String(), x.source).Set(1)
		}
	}
}
