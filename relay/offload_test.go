package relay

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/fastpath"
)

// The fast path end to end: pion's events fill the kernel's table, the
// kernel relays the channel, the counters reach the metrics, and a reload
// that denies the peer or the end of the allocation empties the table.
// Loading BPF programs needs root.
func TestFastPathOffloadsChannels(t *testing.T) {
	needTool(t, "root (loading the fast path's BPF program)", os.Geteuid() == 0)
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	cfg.FastPath = config.FastPath{Enabled: true, Interfaces: []string{"lo"}}
	tr := startRelay(t, cfg, baseCredentials())
	if st := relayStatus(t, tr).FastPath; st == nil || !st.Active {
		t.Fatalf("/status fastPath = %+v, want active\n%s", st, tr.logs)
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_fastpath_active"); got != 1 {
		t.Fatalf("fastpath_active = %v, want 1", got)
	}
	peer := startEchoPeer(t, peerIP)
	listener := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))

	c := dialRaw(t, "udp", listener, testUser, testPassword)
	c.mustAllocate(false)
	if code := c.channelBind(0x4001, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	wantChannels(t, tr, 1)
	const n = 20
	for i := range n {
		if d := c.roundTrip(peer.addr, 0x4001, []byte("kernel "+strconv.Itoa(i))); d.channel != 0x4001 {
			t.Fatalf("echo came back as %+v, want ChannelData on 0x4001", d)
		}
	}
	// The counters arrive with the next poll.
	waitFor(t, "the fast path's counters in the metrics", func() bool {
		return counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer) >= n &&
			counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirFromPeer) >= n
	})
	if got := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirFromPeer, "transport", "udp"); got < n {
		t.Errorf("relayed_packets_total{peer_to_client} = %v, want the kernel's %d in it", got, n)
	}

	// A second allocation, then its end: its channel leaves the kernel.
	c2 := dialRaw(t, "udp", listener, testUser, testPassword)
	c2.mustAllocate(false)
	if code := c2.channelBind(0x4002, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	wantChannels(t, tr, 2)
	if code := c2.refresh(0); code != 0 {
		t.Fatalf("Refresh(0): %d", code)
	}
	wantChannels(t, tr, 1)

	// A reload that denies the peer takes its channel out of the kernel.
	cfg.PeerPolicy.Allow = nil
	cfg.PeerPolicy.Deny = []string{netip.PrefixFrom(peerIP, 32).String()}
	tr.writeFiles(t, cfg, nil)
	tr.Reload()
	wantChannels(t, tr, 0)
	tr.addFastPathCounters()
	before := counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer)
	c.sendChannel(0x4001, []byte("after the reload"))
	time.Sleep(100 * time.Millisecond)
	tr.addFastPathCounters()
	if after := counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer); after != before {
		t.Errorf("the kernel relayed to a denied peer: client_to_peer %v -> %v", before, after)
	}

	// Allowed again, a new channel; the relay stops with it open: pion
	// closes the allocation after the drain, the fast path is gone by then.
	cfg.PeerPolicy.Deny = nil
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	tr.writeFiles(t, cfg, nil)
	tr.Reload()
	c3 := dialRaw(t, "udp", listener, testUser, testPassword)
	c3.mustAllocate(false)
	if code := c3.channelBind(0x4003, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	wantChannels(t, tr, 1)
	tr.stop(t)
	// pion closes allocations from its read loops, which may outlive the
	// relay's Close: their events must find a detached fast path harmless.
	k, _ := keyFor(c3.conn.LocalAddr(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tr.port})
	tr.permissionDeleted(k, peerIP)
	tr.channelDeleted(k, 0x4003)
	tr.addFastPathCounters()
	for _, line := range strings.Split(tr.logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "fast path") {
			t.Errorf("a fast-path warning while stopping: %s", line)
		}
	}
}

// TestFastPathUnavailable: an Auto fast path that cannot load (no such
// interface) leaves the relay relaying in userspace and says why.
func TestFastPathUnavailable(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	cfg.FastPath = config.FastPath{Mode: config.FastPathAuto, Interfaces: []string{"nosuchif0"}}
	tr := startRelay(t, cfg, baseCredentials())
	st := relayStatus(t, tr).FastPath
	if st == nil || st.Active || st.Reason == "" {
		t.Fatalf("/status fastPath = %+v, want inactive with a reason", st)
	}
	wantUserspaceRelaying(t, tr, cfg)
}

// wantUserspaceRelaying checks that a relay without a fast path says so in
// its metric and still relays a channel, in userspace.
func wantUserspaceRelaying(t *testing.T, tr *testRelay, cfg *config.Relay) {
	t.Helper()
	if got := counterValue(t, tr.Relay, "turnpike_relay_fastpath_active"); got != 0 {
		t.Errorf("fastpath_active = %v, want 0", got)
	}
	peerIP := localAddr(t, false, false)
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	tr.writeFiles(t, cfg, nil)
	tr.Reload()
	peer := startEchoPeer(t, peerIP)
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	if code := c.channelBind(0x4001, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	c.roundTrip(peer.addr, 0x4001, []byte("userspace"))
}

// wantChannels waits for n channels in the kernel's table, none of them
// still on its way to the agent.
func wantChannels(t *testing.T, tr *testRelay, n int) {
	t.Helper()
	waitFor(t, "/status fastPath.channels = "+strconv.Itoa(n)+", nothing pending", func() bool {
		st := relayStatus(t, tr).FastPath
		return st != nil && st.Channels == n && st.Pending == 0
	})
}

func TestDefaultFastPathInterfaces(t *testing.T) {
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, bind := range [][]netip.Addr{nil, {netip.MustParseAddr("127.0.0.1")}} {
		names := defaultFastPathInterfaces(bind)
		for _, iface := range ifaces {
			listed := slices.Contains(names, iface.Name)
			switch {
			case iface.Flags&net.FlagLoopback != 0 && iface.Flags&net.FlagUp != 0 && !listed:
				t.Errorf("bind %v: %s (loopback) is not in %v", bind, iface.Name, names)
			case listed && !fastpath.Attachable(iface):
				t.Errorf("bind %v: %s is in %v, but the program cannot work on it", bind, iface.Name, names)
			}
		}
	}
}

// TestFastPathEnabledFailsLoudly: Enabled means the relay does not start
// without its fast path, loaded itself or through an agent.
func TestFastPathEnabledFailsLoudly(t *testing.T) {
	defer func(d time.Duration) { agentWaitEnabled = d }(agentWaitEnabled)
	agentWaitEnabled = 500 * time.Millisecond
	for _, fp := range []config.FastPath{
		{Mode: config.FastPathEnabled, Interfaces: []string{"nosuchif0"}},
		{Mode: config.FastPathEnabled, Socket: filepath.Join(t.TempDir(), "nobody.sock")},
	} {
		cfg := baseConfig(t, t.TempDir())
		cfg.FastPath = fp
		dir := filepath.Dir(cfg.Listeners[2].CertFile)
		writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
		writeYAML(t, filepath.Join(dir, config.CredentialsFile), baseCredentials())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := Run(ctx, Options{ConfigPath: filepath.Join(dir, config.RelayFile), CredentialsDir: dir, LogOutput: io.Discard, NodeName: "-"})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "fastPath.mode Enabled") {
			t.Errorf("%+v: Run returned %v, want a fastPath.mode Enabled error", fp, err)
		}
	}
}

// TestFastPathAgentMissing: an Auto fast path whose agent is not there
// relays in userspace and says why in /status and the metric.
func TestFastPathAgentMissing(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	cfg.FastPath = config.FastPath{Mode: config.FastPathAuto, Socket: filepath.Join(t.TempDir(), "nobody.sock")}
	tr := startRelay(t, cfg, baseCredentials())
	waitFor(t, "/status fastPath.reason naming the agent", func() bool {
		st := relayStatus(t, tr).FastPath
		return st != nil && !st.Active && st.Agent && strings.Contains(st.Reason, "fast-path agent")
	})
	wantUserspaceRelaying(t, tr, cfg)
}

// TestFastPathThroughAgent: the relay holds no program; the agent loads it
// on lo and the kernel relays the relay's channel. When the agent goes, the
// call goes on in userspace; when it is back, the channel is offloaded
// again. Loading the program needs root.
func TestFastPathThroughAgent(t *testing.T) {
	needTool(t, "root (loading the fast path's BPF program)", os.Geteuid() == 0)
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	cfg.FastPath = config.FastPath{Mode: config.FastPathAuto, Interfaces: []string{"lo"}}
	load := func(interfaces []string) (kernelTable, error) { return fastpath.Load(interfaces) }
	socket, stopAgent := startAgent(t, cfg, load)
	cfg.FastPath.Socket = socket
	tr := startRelay(t, cfg, baseCredentials())
	waitFor(t, "fast path active through the agent", func() bool {
		st := relayStatus(t, tr).FastPath
		return st != nil && st.Active && st.Agent && slices.Equal(st.Interfaces, []string{"lo"})
	})
	peer := startEchoPeer(t, peerIP)
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	if code := c.channelBind(0x4001, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	wantChannels(t, tr, 1)
	const n = 10
	for i := range n {
		c.roundTrip(peer.addr, 0x4001, []byte("kernel "+strconv.Itoa(i)))
	}
	waitFor(t, "the kernel's packets in the metrics", func() bool {
		return counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer) >= n
	})

	// The agent goes (its program with it): the call goes on in userspace.
	stopAgent()
	waitFor(t, "fastpath_active 0 after the agent went", func() bool {
		return counterValue(t, tr.Relay, "turnpike_relay_fastpath_active") == 0
	})
	if st := relayStatus(t, tr).FastPath; st.Active || !strings.Contains(st.Reason, "fast-path agent") {
		t.Errorf("/status fastPath = %+v, want inactive, the agent named in the reason", st)
	}
	inKernel := counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer)
	userspace := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp")
	for i := range n {
		c.roundTrip(peer.addr, 0x4001, []byte("userspace "+strconv.Itoa(i)))
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp"); got < userspace+n {
		t.Errorf("relayed_packets_total{client_to_peer} %v -> %v, want %d more in userspace", userspace, got, n)
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer); got != inKernel {
		t.Errorf("fastpath_packets_total moved without an agent: %v -> %v", inKernel, got)
	}

	// A new agent: the relay reconnects and hands it the channel again.
	startAgentAt(t, cfg, socket, load)
	waitFor(t, "fast path active again, the channel written", func() bool {
		st := relayStatus(t, tr).FastPath
		return st != nil && st.Active && st.Channels == 1 && st.Pending == 0
	})
	for i := range n {
		c.roundTrip(peer.addr, 0x4001, []byte("kernel again "+strconv.Itoa(i)))
	}
	waitFor(t, "the new agent's packets in the metrics", func() bool {
		return counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer) >= inKernel+n
	})

	// Stopping closes the connection on purpose: no fallback to report.
	before := len(tr.logs.String())
	tr.stop(t)
	for _, line := range strings.Split(tr.logs.String()[before:], "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "fast path") {
			t.Errorf("a fast-path warning while stopping: %s", line)
		}
	}
}

// TestFastPathFlagsOverrideRelayYAML: the operator passes the mode and the
// agent's socket as flags; they win over relay.yaml and leave its socket
// hash alone (no restart warning on the next reload).
func TestFastPathFlagsOverrideRelayYAML(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	cfg.FastPath = config.FastPath{Enabled: true, Interfaces: []string{"eth0"}}
	dir := filepath.Dir(cfg.Listeners[2].CertFile)
	writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
	r, err := newRelay(Options{ConfigPath: filepath.Join(dir, config.RelayFile), LogOutput: io.Discard, NodeName: "-",
		FastPathMode: config.FastPathAuto, FastPathSocket: "/run/turnpike/fastpath.sock"})
	if err != nil {
		t.Fatal(err)
	}
	want := config.FastPath{Mode: config.FastPathAuto, Interfaces: []string{"eth0"}, Socket: "/run/turnpike/fastpath.sock"}
	if got := r.fastPath; got.EffectiveMode() != want.Mode || got.Socket != want.Socket || !slices.Equal(got.Interfaces, want.Interfaces) {
		t.Errorf("fast path %+v, want %+v", got, want)
	}
	if !r.cfg.FastPath.Enabled || r.cfg.FastPath.Socket != "" {
		t.Errorf("relay.yaml's own fastPath changed: %+v", r.cfg.FastPath)
	}
}

// TestFastPathOffloadsIPv6Channels: an IPv6 allocation's channel goes into
// the kernel (the relay socket's bind address of its own family) and is
// relayed there both ways.
func TestFastPathOffloadsIPv6Channels(t *testing.T) {
	needTool(t, "root (loading the fast path's BPF program)", os.Geteuid() == 0)
	needTool(t, "IPv6", haveIPv6())
	peerIP := localAddr(t, true, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 128).String()}
	cfg.FastPath = config.FastPath{Enabled: true, Interfaces: []string{"lo"}}
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)

	c := dialRaw(t, "udp", net.JoinHostPort("::1", strconv.Itoa(tr.port)), testUser, testPassword)
	if relayed := c.mustAllocate(true); !relayed.Addr().Is6() {
		t.Fatalf("relayed address %s, want IPv6", relayed)
	}
	if code := c.channelBind(0x4001, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	wantChannels(t, tr, 1)
	const n = 20
	for i := range n {
		if d := c.roundTrip(peer.addr, 0x4001, []byte("kernel six "+strconv.Itoa(i))); d.channel != 0x4001 {
			t.Fatalf("echo came back as %+v, want ChannelData on 0x4001", d)
		}
	}
	wantKernelPackets(t, tr, n, n)
}

// TestFastPathSameRelayCall: both clients of a call on this relay, each
// with a channel to the other's relayed address (the node's address, a
// relay port). The kernel hands each one's ChannelData to the other as
// ChannelData on its own channel.
func TestFastPathSameRelayCall(t *testing.T) {
	needTool(t, "root (loading the fast path's BPF program)", os.Geteuid() == 0)
	nodeIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.Addresses.Bind = []string{nodeIP.String()}
	cfg.Internal.Address = nodeIP.String()
	cfg.FastPath = config.FastPath{Enabled: true, Interfaces: []string{"lo"}}
	tr := startRelay(t, cfg, baseCredentials())
	addr := net.JoinHostPort(nodeIP.String(), strconv.Itoa(tr.port))

	alice := dialRaw(t, "udp", addr, testUser, testPassword)
	bob := dialRaw(t, "udp", addr, testUser, testPassword)
	aliceRelayed, bobRelayed := alice.mustAllocate(false), bob.mustAllocate(false)
	if code := alice.channelBind(0x4001, bobRelayed); code != 0 {
		t.Fatalf("alice: ChannelBind to bob's allocation: %d", code)
	}
	if code := bob.channelBind(0x4002, aliceRelayed); code != 0 {
		t.Fatalf("bob: ChannelBind to alice's allocation: %d", code)
	}
	wantChannels(t, tr, 2)
	const n = 10
	for i := range n {
		alice.sendChannel(0x4001, []byte("to bob "+strconv.Itoa(i)))
		if d, err := bob.receive(); err != nil || d.channel != 0x4002 || string(d.data) != "to bob "+strconv.Itoa(i) {
			t.Fatalf("bob received %+v, %v; want ChannelData on 0x4002", d, err)
		}
		bob.sendChannel(0x4002, []byte("to alice "+strconv.Itoa(i)))
		if d, err := alice.receive(); err != nil || d.channel != 0x4001 || string(d.data) != "to alice "+strconv.Itoa(i) {
			t.Fatalf("alice received %+v, %v; want ChannelData on 0x4001", d, err)
		}
	}
	// Each datagram is one allocation's client_to_peer and the other's
	// peer_to_client, all in the kernel.
	wantKernelPackets(t, tr, 2*n, 2*n)
}

// wantKernelPackets waits for the fast path's counters in the metrics
// (they arrive with the next poll).
func wantKernelPackets(t *testing.T, tr *testRelay, toPeer, fromPeer float64) {
	t.Helper()
	waitFor(t, "the fast path's counters in the metrics", func() bool {
		return counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirToPeer) >= toPeer &&
			counterValue(t, tr.Relay, "turnpike_relay_fastpath_packets_total", "direction", dirFromPeer) >= fromPeer
	})
}
