// Package relay is the data plane of turnpike: the process every relay pod
// runs (`turnpike relay`). It serves TURN with pion/turn on the listeners of
// relay.yaml, authenticates with the keys and shared secrets of
// credentials.yaml, applies the peer policy and quotas, exports Prometheus
// metrics and health endpoints on an internal address, hot-reloads both
// files, and drains on shutdown.
//
// Run is the entry point; everything else hangs off the Relay it builds.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// Options are the relay's command-line settings. Only ConfigPath is required.
type Options struct {
	// ConfigPath is relay.yaml.
	ConfigPath string
	// CredentialsDir holds credentials.yaml (the mounted Secret). Empty:
	// no credentials, so every Allocate fails.
	CredentialsDir string
	// LogLevel and LogFormat override relay.yaml's log settings when set.
	LogLevel, LogFormat string
	// LogOutput receives the logs; default stderr.
	LogOutput io.Writer
	// Version is reported in /status and turnpike_relay_build_info.
	Version string
	// ReloadInterval is how often the config files are re-read; default 2s.
	ReloadInterval time.Duration
	// NodeName and HostIP default to the environment variables NODE_NAME
	// and HOST_IP (set from the downward API in the relay pod).
	NodeName, HostIP string
	// FastPathMode and FastPathSocket override relay.yaml's fastPath.mode
	// and fastPath.socket when set. The operator passes them as flags: they
	// come with the pod template that adds the fastpath container, while a
	// relay.yaml field would be refused by relays of an earlier release
	// that read the same ConfigMap until they are replaced.
	FastPathMode   config.FastPathMode
	FastPathSocket string
	// Started, when set, is called once every listener is bound and the
	// relay is ready (tests use it to find the Relay).
	Started func(*Relay)
}

// Relay is one running relay process.
type Relay struct {
	opts Options
	log  *slog.Logger
	// cfg is the config the sockets were opened with. Socket settings never
	// change while running; hot-reloadable settings live in state.
	cfg *config.Relay
	// fastPath is cfg.FastPath with the command line's overrides.
	fastPath config.FastPath
	env      environment
	state    atomic.Pointer[state]

	allocs        *allocTracker
	metrics       *metrics
	traffic       map[string]trafficCounters // "direction/transport"
	bandwidthDrop prometheus.Counter

	// rotationKeys carries the key that matched a REST request's
	// MESSAGE-INTEGRITY from the request inspector to the AuthHandler, while
	// several shared secrets are valid (see verifyIntegrity).
	rotationKeys sync.Map // rotationKey -> matchedKey
	// signers carries the key of each request the gate verified to answer(),
	// which signs pion's answer with it (signing.go).
	signers sync.Map // signerKey -> signer
	// reservations holds the sockets RESERVATION-TOKENs reserve
	// (reservations.go).
	reservations *reservations
	// duals are the dual allocations of the UDP listeners (dual.go).
	duals *dualTable

	stun *stunDiscovery // addresses.stun (stun.go)
	// discovery maps each behaviour discovery socket's address to its place
	// in its set (behavior.go); built before the sockets are read, then
	// only read. Empty when stun.behaviorDiscovery is off.
	discovery map[netip.AddrPort]discoveryPoint
	// discoveryStatus is the /status view of discovery, set once with it.
	discoveryStatus atomic.Pointer[config.BehaviorDiscoveryStatus]
	// offload is the fast path (offload.go): nil when it is disabled or the
	// relay could not load the program itself, and fastPathReason says why.
	offload        *offloader
	fastPathReason string
	server         *turn.Server
	certs          []*certReloader
	ready          atomic.Bool
	draining       atomic.Bool

	// The edge (clientconn.go): stream connections open per client address,
	// the connection cap when limits.connections is unset, listeners whose
	// accept or read loop died (then /readyz fails), and rate-limited logs
	// for what clients can trigger at will.
	edge               *edge
	conns              *connLimiter
	defaultConnections int
	deadListeners      atomic.Int32
	rlog               *rateLog
	throttle           *authThrottle
	gen                atomic.Int64 // config generation: successful loads

	// Last content read from each file, so a reload only acts on change and
	// a broken file is counted once, not every poll. Guarded by reloadMu.
	reloadMu  sync.Mutex
	lastFiles config.Files
	lastNode  []byte
}

// state is the hot-reloadable part of the config, swapped atomically.
type state struct {
	cfg    *config.Relay
	creds  *credentials
	policy *peerPolicy
	quotas config.Quotas
	addrs  addresses
	// hostAddrs are the addresses on the host's interfaces, sorted, as the
	// policy was built with them.
	hostAddrs []netip.Addr
}

func (r *Relay) current() *state { return r.state.Load() }

// Run runs a relay until ctx is cancelled, then drains and returns.
func Run(ctx context.Context, opts Options) error {
	r, err := newRelay(opts)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

func newRelay(opts Options) (*Relay, error) {
	if opts.ConfigPath == "" {
		return nil, errors.New("--config is required")
	}
	if opts.ReloadInterval <= 0 {
		opts.ReloadInterval = 2 * time.Second
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	if opts.NodeName == "" {
		opts.NodeName = os.Getenv("NODE_NAME")
	}
	if opts.HostIP == "" {
		opts.HostIP = os.Getenv("HOST_IP")
	}
	files, err := config.ReadFiles(opts.ConfigPath, opts.CredentialsDir)
	if err != nil {
		return nil, err
	}
	cfg, creds, err := files.Parse()
	if err != nil {
		return nil, err
	}
	log, err := NewLogger(opts.LogOutput, firstNonEmpty(opts.LogLevel, cfg.Log.Level), firstNonEmpty(opts.LogFormat, cfg.Log.Format))
	if err != nil {
		return nil, err
	}
	r := &Relay{opts: opts, log: log, cfg: cfg, allocs: newAllocTracker(), reservations: newReservations(), duals: newDualTable(), stun: newSTUNDiscovery(), lastFiles: files,
		conns: newConnLimiter(), defaultConnections: defaultConnectionLimit(), rlog: newRateLog(log),
		throttle: newAuthThrottle()}
	r.lastNode, _ = readOptional(cfg.Addresses.NodeFile)
	r.fastPath = cfg.FastPath
	if opts.FastPathMode != "" {
		r.fastPath.Mode, r.fastPath.Enabled = opts.FastPathMode, false
	}
	if opts.FastPathSocket != "" {
		r.fastPath.Socket = opts.FastPathSocket
	}
	if opts.HostIP != "" {
		if r.env.hostIP, err = netip.ParseAddr(opts.HostIP); err != nil {
			return nil, fmt.Errorf("HOST_IP: %w", err)
		}
	}
	r.env.nodeName = opts.NodeName
	r.metrics = newMetrics(opts.Version, r.allocs, r.conns)
	r.traffic = map[string]trafficCounters{}
	for _, d := range []string{dirToPeer, dirFromPeer} {
		for _, t := range []string{"udp", "tcp"} {
			r.traffic[d+"/"+t] = r.metrics.traffic(d, t)
		}
	}
	r.bandwidthDrop = r.metrics.quotaRejections.WithLabelValues(quotaBandwidth)

	st, err := r.buildState(cfg, creds)
	if err != nil {
		return nil, err
	}
	r.install(st)
	r.metrics.reloads.WithLabelValues("success").Inc()
	return r, nil
}

func (r *Relay) run(ctx context.Context) error {
	closeInternal, err := r.serveInternal()
	if err != nil {
		return err
	}
	defer closeInternal()

	// Before pion, so that no channel is missed.
	if err := r.startFastPath(ctx); err != nil {
		return err
	}
	server, err := r.startTURN()
	if err != nil {
		r.stopFastPath()
		return err
	}
	r.server = server
	hup, stopHUP := notifyHUP()
	defer stopHUP()
	r.startSTUN(ctx)
	st := r.current()
	r.log.Info("relay ready", "version", r.opts.Version, "realm", r.cfg.Realm,
		"advertised", st.addrs.advertisedList(), "addressSource", st.addrs.source(),
		"listeners", len(r.cfg.Listeners), "socketHash", r.cfg.SocketHash())
	r.ready.Store(true)
	if r.opts.Started != nil {
		r.opts.Started(r)
	}

	r.watchConfig(ctx, hup)
	return r.drain()
}

// drain refuses new allocations and lets existing ones run until they end
// or drainGracePeriod passes, then closes everything.
func (r *Relay) drain() error {
	r.draining.Store(true)
	r.ready.Store(false)
	r.metrics.draining.Set(1)
	grace := r.current().cfg.DrainGracePeriod.Duration
	r.log.Info("draining: refusing new allocations", "allocations", r.AllocationCount(), "gracePeriod", grace.String())
	deadline := time.Now().Add(grace)
	for r.AllocationCount() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := r.AllocationCount(); n > 0 {
		r.log.Warn("drain grace period over, closing remaining allocations", "allocations", n)
	}
	err := r.server.Close()
	r.reservations.closeAll()
	r.stopFastPath()
	r.log.Info("relay stopped")
	return err
}

// AllocationCount is the number of open allocations.
func (r *Relay) AllocationCount() int {
	n, _, _ := r.allocs.totals()
	return n
}

// Ready reports what /readyz reports.
func (r *Relay) Ready() bool {
	return r.ready.Load() && !r.draining.Load() && r.deadListeners.Load() == 0
}

// Registry is the relay's Prometheus registry.
func (r *Relay) Registry() *prometheus.Registry { return r.metrics.registry }

// buildState compiles a config and credentials into a state, or fails
// without side effects.
func (r *Relay) buildState(cfg *config.Relay, c *config.Credentials) (*state, error) {
	if cfg.Addresses.STUN != nil {
		if err := validateSTUNServers(cfg.Addresses.STUN.Servers); err != nil {
			return nil, err
		}
	}
	// Keys are derived with the realm the server runs with; a realm change
	// needs a restart (reported by reload).
	creds, err := newCredentials(c, r.cfg.Realm)
	if err != nil {
		return nil, err
	}
	st := &state{cfg: cfg, creds: creds, quotas: cfg.Quotas}
	if err := r.resolveState(st); err != nil {
		return nil, err
	}
	return st, nil
}

func (r *Relay) install(st *state) {
	r.state.Store(st)
	r.gen.Add(1)
	r.metrics.configGen.Set(float64(r.gen.Load()))
	r.metrics.credGeneration.Set(float64(st.creds.generation))
	r.metrics.lastReload.SetToCurrentTime()
	r.metrics.setAddressInfo(st.addrs)
}

// startTURN opens every listener and starts the pion server on them.
func (r *Relay) startTURN() (*turn.Server, error) {
	packetConns, listeners, err := r.openListeners()
	if err != nil {
		return nil, err
	}
	server, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: packetConns,
		ListenerConfigs:   listeners,
		LoggerFactory:     pionLoggerFactory{log: r.log, rateLimit: true},
		Realm:             r.cfg.Realm,
		AuthHandler:       r.authenticate,
		QuotaHandler:      r.admitAllocation,
		EventHandler:      r.eventHandler(),
		// Set, not defaulted: the fast path gives the kernel's entries the
		// same lifetimes (offload.go).
		ChannelBindTimeout: channelLifetime,
		PermissionTimeout:  permissionLifetime,
		AllocationLifetime: pionDefaultLifetime,
	})
	if err != nil {
		closeListeners(packetConns, listeners)
		return nil, err
	}
	return server, nil
}

func closeListeners(pcs []turn.PacketConnConfig, ls []turn.ListenerConfig) {
	for _, p := range pcs {
		_ = p.PacketConn.Close()
	}
	for _, l := range ls {
		_ = l.Listener.Close()
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// addrString renders a net.Addr for logs without panicking on nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
