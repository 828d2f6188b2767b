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
	"slices"
	"sync"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/relay/fastpath/wire"
)

// The fast-path agent (`turnpike fastpath`) is the second process of the
// relay pod: the only one with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON. It
// loads the TC program, owns its maps and listens on a Unix socket (no
// network port) for the relay, which runs with no capabilities at all.
//
// It trusts nothing the relay says. The relay parses untrusted input; if it
// is compromised, the most it may get from the agent is what the relay's
// own peer policy would have allowed. So every put is checked again here
// against the same relay.yaml, compiled by the same code (newPeerPolicy):
// the peer, the node's addresses only on relay ports, the listener and the
// relay port, the channel number, the expiries. Entries are bounded, and
// all of a connection's entries leave the kernel when it ends, so a relay
// that restarts stops the kernel relaying its old channels.

// maxAgentChannels bounds the channels one relay may hold in the kernel:
// the size of the program's maps (MAX_CHANNELS in turnrelay.c).
const maxAgentChannels = 65536

// expirySlack is how far past a lifetime an expiry the relay computed may
// reach by the time the agent checks it (the two share a clock).
const expirySlack = 5 * time.Second

// kernelTable is the program's maps as the relay drives them: a program the
// relay loaded itself (*fastpath.Offload), or the agent (*wire.Client).
type kernelTable interface {
	Put(fastpath.Channel) error
	Delete(fastpath.Channel) error
	DeleteQuota(relayPort uint16) error
	Counters() (fastpath.Counters, error)
	Interfaces() []string
	Close() error
}

// AgentOptions configure `turnpike fastpath`.
type AgentOptions struct {
	// ConfigPath is the relay's relay.yaml, mounted in both containers.
	ConfigPath string
	// Socket is the Unix socket the relay connects to.
	Socket string
	// RelayUID is the only user whose connections are served (SO_PEERCRED);
	// negative serves any user.
	RelayUID  int
	LogLevel  string
	LogFormat string
	LogOutput io.Writer
	// ReloadInterval is how often relay.yaml and the node's addresses are
	// re-read; default 2s.
	ReloadInterval time.Duration

	// load loads the program; tests replace it.
	load func(interfaces []string) (kernelTable, error)
}

// agentRules are what the agent checks a put against, built from relay.yaml
// and the node's addresses; immutable, rebuilt on change.
type agentRules struct {
	policy     *peerPolicy
	udpPorts   map[uint16]bool
	relayPorts config.PortRange
	hostAddrs  []netip.Addr
	maxEntries int
}

// channelKey is how the agent knows a relay's channel: the kernel's key of
// its client-to-peer half.
type channelKey struct {
	client     netip.AddrPort
	listenPort uint16
	number     uint16
}

func keyOf(c fastpath.Channel) channelKey {
	return channelKey{c.Client, c.Listener.Port(), c.Number}
}

type fastPathAgent struct {
	opts    AgentOptions
	log     *slog.Logger
	env     environment
	kernel  kernelTable // nil when the program did not load
	loadErr error

	mu       sync.Mutex
	rules    *agentRules
	lastYAML []byte
	lastNode []byte
	// entries are the current relay's channels, as the agent admitted them.
	entries map[channelKey]fastpath.Channel
}

// RunFastPathAgent loads the program and serves the relay until ctx is
// cancelled; then the program is detached and the kernel stops relaying.
// A program that cannot load is not fatal: the agent keeps answering the
// relay's hello with why, so the relay reports it and relays in userspace.
func RunFastPathAgent(ctx context.Context, opts AgentOptions) error {
	a, err := newFastPathAgent(opts)
	if err != nil {
		return err
	}
	ln, err := listenAgentSocket(opts.Socket)
	if err != nil {
		return err
	}
	defer ln.Close()
	a.load()
	if a.kernel != nil {
		defer a.kernel.Close()
	}
	go a.watch(ctx)
	go func() { <-ctx.Done(); ln.Close() }()
	a.log.Info("fast-path agent listening", "socket", opts.Socket, "relayUID", opts.RelayUID)
	return a.serve(ctx, ln)
}

func newFastPathAgent(opts AgentOptions) (*fastPathAgent, error) {
	if opts.ConfigPath == "" || opts.Socket == "" {
		return nil, errors.New("--config and --socket are required")
	}
	if opts.ReloadInterval <= 0 {
		opts.ReloadInterval = 2 * time.Second
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	if opts.load == nil {
		opts.load = func(interfaces []string) (kernelTable, error) { return fastpath.Load(interfaces) }
	}
	a := &fastPathAgent{opts: opts, entries: map[channelKey]fastpath.Channel{}}
	a.env.nodeName = os.Getenv("NODE_NAME")
	if ip := os.Getenv("HOST_IP"); ip != "" {
		var err error
		if a.env.hostIP, err = netip.ParseAddr(ip); err != nil {
			return nil, fmt.Errorf("HOST_IP: %w", err)
		}
	}
	cfg, err := a.readConfig()
	if err != nil {
		return nil, err
	}
	if a.log, err = NewLogger(opts.LogOutput, firstNonEmpty(opts.LogLevel, cfg.Log.Level), firstNonEmpty(opts.LogFormat, cfg.Log.Format)); err != nil {
		return nil, err
	}
	if a.rules, err = a.buildRules(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// readConfig reads relay.yaml and remembers what it read.
func (a *fastPathAgent) readConfig() (*config.Relay, error) {
	data, err := os.ReadFile(a.opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	cfg, err := config.ParseRelay(data)
	if err != nil {
		return nil, err
	}
	a.lastYAML = data
	a.lastNode, _ = readOptional(cfg.Addresses.NodeFile)
	return cfg, nil
}

// buildRules compiles the relay's peer policy as the relay does, with the
// node's addresses as the agent sees them: the host's interfaces (both
// containers share the host's network namespace), the configured and bind
// addresses and HOST_IP. (An address the relay discovered through STUN is
// not among them: the agent sends nothing to the network.)
func (a *fastPathAgent) buildRules(cfg *config.Relay) (*agentRules, error) {
	addrs, err := resolveAddresses(cfg.Addresses, a.env, [2]sourcedAddr{})
	if err != nil {
		return nil, err
	}
	onHost := hostAddrs()
	policy, err := newPeerPolicy(cfg.PeerPolicy, nodeAddrList(addrs, onHost, a.env), cfg.RelayPortRange)
	if err != nil {
		return nil, err
	}
	rules := &agentRules{policy: policy, udpPorts: map[uint16]bool{}, relayPorts: cfg.RelayPortRange, hostAddrs: onHost, maxEntries: maxAgentChannels}
	for _, l := range cfg.Listeners {
		if l.Protocol == config.UDP {
			rules.udpPorts[uint16(l.Port)] = true
		}
	}
	if q := cfg.Quotas; q.AllocationsTotal > 0 && q.ChannelsPerAllocation > 0 {
		rules.maxEntries = min(rules.maxEntries, q.AllocationsTotal*q.ChannelsPerAllocation)
	}
	return rules, nil
}

// load loads and attaches the program on fastPath.interfaces, or on the
// interfaces holding the bind addresses.
func (a *fastPathAgent) load() {
	cfg, _ := config.ParseRelay(a.lastYAML)
	interfaces := cfg.FastPath.Interfaces
	if len(interfaces) == 0 {
		bind, _ := bindAddrs(cfg.Addresses, a.env)
		interfaces = defaultFastPathInterfaces(bind)
	}
	a.kernel, a.loadErr = a.opts.load(interfaces)
	if a.loadErr != nil {
		a.log.Warn("fast path unavailable: the relay will relay in userspace", "reason", a.loadErr.Error(), "interfaces", interfaces)
		return
	}
	a.log.Info("fast path loaded", "interfaces", a.kernel.Interfaces())
}

// listenAgentSocket replaces a socket a previous agent left behind and lets
// any user connect: the agent's container holds no CAP_CHOWN to give the
// socket to the relay's user, and SO_PEERCRED decides who is served.
func listenAgentSocket(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// serve takes one relay connection at a time: a pod has one relay, and a
// relay that restarts closed its old connection when its process ended.
func (a *fastPathAgent) serve(ctx context.Context, ln *net.UnixListener) error {
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if uid, err := peerUID(conn); err != nil || (a.opts.RelayUID >= 0 && uid != a.opts.RelayUID) {
			a.log.Warn("fast-path agent: connection refused", "uid", uid, "wantUID", a.opts.RelayUID, "error", errString(err))
			conn.Close()
			continue
		}
		a.serveConn(ctx, conn)
	}
}

// serveConn answers one relay until its connection ends, then deletes
// every entry it put.
func (a *fastPathAgent) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer a.dropAll()
	hello := true
	for {
		body, err := wire.ReadMessage(conn)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				a.log.Warn("fast-path agent: relay connection", "error", err.Error())
			}
			return
		}
		q, err := wire.DecodeRequest(body)
		if err == nil && hello != (q.Op == wire.OpHello) {
			err = errors.New("the first message is a hello, and only the first")
		}
		var p wire.Response
		if err == nil {
			p, err = a.handle(q)
		}
		if err != nil {
			p = wire.Response{Error: err.Error()}
		}
		if werr := wire.WriteMessage(conn, p); werr != nil || (hello && err != nil) {
			return
		}
		hello = false
	}
}

func (a *fastPathAgent) handle(q wire.Request) (wire.Response, error) {
	switch q.Op {
	case wire.OpHello:
		if q.Version < wire.MinVersion || q.Version > wire.Version {
			return wire.Response{}, fmt.Errorf("the agent speaks versions %d to %d, the relay %d", wire.MinVersion, wire.Version, q.Version)
		}
		if a.loadErr != nil {
			return wire.Response{}, fmt.Errorf("the agent could not load the program: %w", a.loadErr)
		}
		return wire.Response{Version: q.Version, Interfaces: a.kernel.Interfaces()}, nil
	case wire.OpBatch:
		return a.batch(q.Batch), nil
	case wire.OpPut:
		return wire.Response{}, a.put(*q.Channel)
	case wire.OpDelete:
		return wire.Response{}, a.delete(*q.Channel)
	case wire.OpDeleteQuota:
		return wire.Response{}, a.deleteQuota(q.RelayPort)
	case wire.OpCounters:
		c, err := a.kernel.Counters()
		return wire.Response{Counters: &c}, err
	}
	return wire.Response{}, fmt.Errorf("unknown op %q", q.Op)
}

// batch does a batch's requests in order; one refused leaves the others
// alone.
func (a *fastPathAgent) batch(reqs []wire.Request) wire.Response {
	var errs []string
	for i, q := range reqs {
		_, err := a.handle(q) // Validate let only puts, deletes and deleteQuotas in
		if err == nil {
			continue
		}
		if errs == nil {
			errs = make([]string, len(reqs))
		}
		errs[i] = wire.ErrorText(err)
	}
	return wire.Response{Errors: errs}
}

// put admits c if the rules allow it and writes it to the kernel.
func (a *fastPathAgent) put(c fastpath.Channel) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	rules := a.rules
	// Whether an end is on this host decides where the kernel delivers to,
	// and which ports of the host a peer may use; the agent answers both
	// from its own view of the host's addresses and its own peer policy.
	c.ClientLocal, c.PeerLocal = isHostAddr(rules.hostAddrs, c.Client.Addr()), isHostAddr(rules.hostAddrs, c.Peer.Addr())
	c.LocalPeerPorts = rules.policy.localPeerPorts(c.Peer.Addr())
	if err := rules.admit(c, timeNow()); err != nil {
		a.log.Warn("fast-path agent: channel refused", "reason", err.Error(), "client", c.Client.String(), "peer", c.Peer.String())
		return err
	}
	k := keyOf(c)
	old, refresh := a.entries[k]
	if refresh && (old.Peer != c.Peer || old.Relay != c.Relay) {
		// The kernel's peer-side key would change: the old one must go.
		if err := a.kernel.Delete(old); err != nil {
			return err
		}
		delete(a.entries, k)
		refresh = false
	}
	if !refresh && len(a.entries) >= rules.maxEntries {
		a.sweepExpired(timeNow())
		if len(a.entries) >= rules.maxEntries {
			return fmt.Errorf("the relay holds %d channels in the kernel, the most it may", rules.maxEntries)
		}
	}
	if err := a.kernel.Put(c); err != nil {
		return err
	}
	a.entries[k] = c
	a.log.Debug("fast-path agent: channel admitted", "client", c.Client.String(), "channel", c.Number, "peer", c.Peer.String(),
		"clientLocal", c.ClientLocal, "peerLocal", c.PeerLocal, "refresh", refresh)
	return nil
}

// admit checks one channel against relay.yaml: what the relay's own checks
// would have refused, the agent refuses too.
func (r *agentRules) admit(c fastpath.Channel, now time.Time) error {
	if ok, reason := r.policy.checkPort(c.Peer); !ok {
		return fmt.Errorf("peer %v refused by the peer policy (%s)", c.Peer, reason)
	}
	if a := c.Client.Addr(); !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || c.Client.Port() == 0 || a.Unmap() == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		// Clients may be anywhere a relay listener is reachable from;
		// this only keeps the answer to a unicast address and port.
		return fmt.Errorf("client %v is not a unicast address and port", c.Client)
	}
	if !r.udpPorts[c.Listener.Port()] || !r.local(c.Listener.Addr()) {
		return fmt.Errorf("listener %v is not a UDP listener of this relay", c.Listener)
	}
	if p := int(c.Relay.Port()); p < r.relayPorts.Min || p > r.relayPorts.Max || !r.local(c.Relay.Addr()) {
		return fmt.Errorf("relay address %v is not in the relay port range on this node", c.Relay)
	}
	if !c.Offloadable() {
		return fmt.Errorf("channel %#x from %v to %v is not one the program relays", c.Number, c.Client, c.Peer)
	}
	if latest := now.Add(channelLifetime + expirySlack); c.ChannelExpires.After(latest) || c.PermissionExpires.After(latest) {
		return fmt.Errorf("expiry beyond the channel lifetime (%s)", channelLifetime)
	}
	if c.BytesPerSecond < 0 {
		return errors.New("negative bandwidth quota")
	}
	return nil
}

// local reports whether a is unspecified or an address of this host: where
// the relay's sockets may be bound.
func (r *agentRules) local(a netip.Addr) bool {
	return a.IsUnspecified() || isHostAddr(r.hostAddrs, a)
}

// delete removes a channel the relay put; it deletes what the agent
// admitted under that key, not what the relay says now.
func (a *fastPathAgent) delete(c fastpath.Channel) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := keyOf(c)
	old, ok := a.entries[k]
	if !ok {
		return nil
	}
	delete(a.entries, k)
	return a.kernel.Delete(old)
}

// deleteQuota removes an allocation's bandwidth buckets, unless one of the
// relay's channels still uses them.
func (a *fastPathAgent) deleteQuota(relayPort uint16) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.entries {
		if c.Relay.Port() == relayPort {
			return fmt.Errorf("relay port %d still has channels", relayPort)
		}
	}
	return a.kernel.DeleteQuota(relayPort)
}

// sweepExpired forgets the channels whose both halves have expired (the
// kernel no longer relays them); a.mu is held.
func (a *fastPathAgent) sweepExpired(now time.Time) {
	for k, c := range a.entries {
		if now.After(c.ChannelExpires) && now.After(c.PermissionExpires) {
			a.removeLocked(k, c)
		}
	}
}

// removeLocked deletes an entry from the kernel and the table, and its
// allocation's buckets with its last channel; a.mu is held.
func (a *fastPathAgent) removeLocked(k channelKey, c fastpath.Channel) {
	if err := a.kernel.Delete(c); err != nil {
		a.log.Warn("fast-path agent: deleting a channel", "error", err.Error())
	}
	delete(a.entries, k)
	for _, other := range a.entries {
		if other.Relay.Port() == c.Relay.Port() {
			return
		}
	}
	if err := a.kernel.DeleteQuota(c.Relay.Port()); err != nil {
		a.log.Warn("fast-path agent: deleting a bandwidth quota", "error", err.Error())
	}
}

// dropAll deletes every entry of the relay whose connection ended.
func (a *fastPathAgent) dropAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.entries)
	for k, c := range a.entries {
		a.removeLocked(k, c)
	}
	if n > 0 {
		a.log.Info("fast-path agent: relay disconnected, its channels left the kernel", "channels", n)
	}
}

// watch re-reads relay.yaml and the node's addresses, and applies a changed
// policy to the entries already in the kernel, as the relay does on reload.
func (a *fastPathAgent) watch(ctx context.Context) {
	t := time.NewTicker(a.opts.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.reload()
		}
	}
}

func (a *fastPathAgent) reload() {
	data, err := os.ReadFile(a.opts.ConfigPath)
	if err != nil {
		return
	}
	cfg, err := config.ParseRelay(data)
	if err != nil {
		return // the relay keeps its last good config, and so does the agent
	}
	node, _ := readOptional(cfg.Addresses.NodeFile)
	a.mu.Lock()
	defer a.mu.Unlock()
	if string(data) == string(a.lastYAML) && string(node) == string(a.lastNode) && slices.Equal(hostAddrs(), a.rules.hostAddrs) {
		return
	}
	rules, err := a.buildRules(cfg)
	if err != nil {
		a.log.Warn("fast-path agent: rules not rebuilt", "error", err.Error())
		return
	}
	a.rules, a.lastYAML, a.lastNode = rules, data, node
	removed := 0
	for k, c := range a.entries {
		if ok, _ := rules.policy.checkPort(c.Peer); !ok {
			a.removeLocked(k, c)
			removed++
		}
	}
	a.log.Info("fast-path agent: relay.yaml or the node's addresses changed, rules rebuilt", "channelsRemoved", removed)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
