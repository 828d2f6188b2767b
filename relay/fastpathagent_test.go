package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/relay/fastpath/wire"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// fakeKernel stands in for the program's maps where a test is about what
// the agent lets through, not about the kernel relaying.
type fakeKernel struct {
	mu       sync.Mutex
	channels map[channelKey]fastpath.Channel
	quotas   []uint16 // DeleteQuota calls
}

func newFakeKernel() *fakeKernel { return &fakeKernel{channels: map[channelKey]fastpath.Channel{}} }

func (k *fakeKernel) Put(c fastpath.Channel) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.channels[keyOf(c)] = c
	return nil
}

func (k *fakeKernel) Delete(c fastpath.Channel) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.channels, keyOf(c))
	return nil
}

func (k *fakeKernel) DeleteQuota(port uint16) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.quotas = append(k.quotas, port)
	return nil
}

func (k *fakeKernel) Counters() (fastpath.Counters, error) { return fastpath.Counters{}, nil }
func (k *fakeKernel) Interfaces() []string                 { return []string{"fake0"} }
func (k *fakeKernel) Close() error                         { return nil }

func (k *fakeKernel) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.channels)
}

// startAgent runs the agent on cfg (written as relay.yaml) until the test
// ends, with load as its program loader; it returns the socket's path.
func startAgent(t *testing.T, cfg *config.Relay, load func([]string) (kernelTable, error)) (socket string, stop func()) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "fastpath.sock")
	return socket, startAgentAt(t, cfg, socket, load)
}

// startAgentAt runs an agent on socket; stop ends it.
func startAgentAt(t *testing.T, cfg *config.Relay, socket string, load func([]string) (kernelTable, error)) (stop func()) {
	t.Helper()
	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, config.RelayFile), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &testutil.SyncBuffer{}
	go func() {
		done <- RunFastPathAgent(ctx, AgentOptions{
			ConfigPath: filepath.Join(dir, config.RelayFile), Socket: socket, RelayUID: os.Getuid(),
			LogOutput: logs, ReloadInterval: time.Hour, load: load, // log level and format: relay.yaml's
		})
	}()
	waitFor(t, "the agent listening", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the agent returned %v before listening\n%s", err, logs)
		default:
		}
		return strings.Contains(logs.String(), "fast-path agent listening")
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent returned %v", err)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs)
		}
	})
	return stop
}

func dialAgent(t *testing.T, socket string) *wire.Client {
	t.Helper()
	cl, err := wire.Dial(context.Background(), socket)
	if err != nil {
		t.Fatalf("dial the agent: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// agentChannel is a channel the agent admits under agentTestConfig.
func agentChannel(cfg *config.Relay, number uint16, peer string) fastpath.Channel {
	now := time.Now()
	return fastpath.Channel{
		Client:   netip.MustParseAddrPort("198.51.100.7:40000"),
		Listener: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(cfg.Listeners[0].Port)),
		Number:   number, Peer: netip.MustParseAddrPort(peer),
		Relay:          netip.AddrPortFrom(netip.IPv4Unspecified(), 20001),
		ChannelExpires: now.Add(channelLifetime), PermissionExpires: now.Add(permissionLifetime),
	}
}

func agentTestConfig(t *testing.T) *config.Relay {
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{"10.9.0.0/16"}
	return cfg
}

// TestAgentRefusesWhatThePolicyRefuses: a relay that asks the agent to
// relay to a peer relay.yaml refuses (as a compromised relay would) gets
// an error, and the kernel gets nothing.
func TestAgentRefusesWhatThePolicyRefuses(t *testing.T) {
	cfg := agentTestConfig(t)
	kernel := newFakeKernel()
	socket, _ := startAgent(t, cfg, func([]string) (kernelTable, error) { return kernel, nil })
	cl := dialAgent(t, socket)
	if got := cl.Interfaces(); len(got) != 1 || got[0] != "fake0" {
		t.Errorf("hello: interfaces %v, want the agent's [fake0]", got)
	}

	nodeAddr := localAddr(t, false, false)
	tooLong := agentChannel(cfg, 0x4009, "10.9.0.1:5000")
	tooLong.ChannelExpires = time.Now().Add(24 * time.Hour)
	otherListener := agentChannel(cfg, 0x400a, "10.9.0.1:5000")
	otherListener.Listener = netip.AddrPortFrom(netip.IPv4Unspecified(), 22)
	outsideRange := agentChannel(cfg, 0x400b, "10.9.0.1:5000")
	outsideRange.Relay = netip.AddrPortFrom(netip.IPv4Unspecified(), 30000)
	broadcastClient := agentChannel(cfg, 0x400c, "10.9.0.1:5000")
	broadcastClient.Client = netip.MustParseAddrPort("255.255.255.255:40000")
	for _, tt := range []struct {
		name string
		c    fastpath.Channel
		want string
	}{
		{"a private peer", agentChannel(cfg, 0x4001, "10.10.0.1:5000"), "refused by the peer policy (private)"},
		{"loopback", agentChannel(cfg, 0x4002, "127.0.0.1:5000"), "refused by the peer policy (loopback)"},
		{"metadata", agentChannel(cfg, 0x4003, "169.254.169.254:80"), "(link_local)"},
		{"a mapped spelling", agentChannel(cfg, 0x4004, "[::ffff:10.10.0.1]:5000"), "(private)"},
		{"the node off its relay ports", agentChannel(cfg, 0x4005, netip.AddrPortFrom(nodeAddr, 22).String()), "(node)"},
		{"an expiry past the lifetime", tooLong, "beyond the channel lifetime"},
		{"a port that is no UDP listener", otherListener, "not a UDP listener"},
		{"a relay port out of range", outsideRange, "not in the relay port range"},
		{"a broadcast client", broadcastClient, "not a unicast address"},
	} {
		err := cl.Put(tt.c)
		var refused *wire.RefusedError
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: put answered %v, want a refusal saying %q", tt.name, err, tt.want)
		}
	}
	if n := kernel.len(); n != 0 {
		t.Fatalf("the kernel holds %d channels after refusals only", n)
	}

	// Refusals leave the connection working: an allowed peer, and the
	// node's own address on a relay port (another allocation), go in.
	if err := cl.Put(agentChannel(cfg, 0x4001, "10.9.0.1:5000")); err != nil {
		t.Fatalf("put of an allowed peer: %v", err)
	}
	if err := cl.Put(agentChannel(cfg, 0x4005, netip.AddrPortFrom(nodeAddr, 20002).String())); err != nil {
		t.Fatalf("put of the node on a relay port: %v", err)
	}
	if n := kernel.len(); n != 2 {
		t.Fatalf("the kernel holds %d channels, want 2", n)
	}
	// Where an end is decides delivery: the agent's view of the host wins.
	liar := agentChannel(cfg, 0x4006, "10.9.0.2:5000")
	liar.PeerLocal = true
	if err := cl.Put(liar); err != nil {
		t.Fatal(err)
	}
	kernel.mu.Lock()
	got := kernel.channels[keyOf(liar)]
	kernel.mu.Unlock()
	if got.PeerLocal {
		t.Error("the agent kept PeerLocal for a peer that is not on this host")
	}
	// Which ports of the node a peer may use is the agent's policy too: a
	// relay claiming every port gets the relay port range in the kernel.
	widePorts := agentChannel(cfg, 0x4007, netip.AddrPortFrom(nodeAddr, 20003).String())
	widePorts.LocalPeerPorts = fastpath.AllPorts
	if err := cl.Put(widePorts); err != nil {
		t.Fatal(err)
	}
	kernel.mu.Lock()
	got = kernel.channels[keyOf(widePorts)]
	kernel.mu.Unlock()
	if want := (fastpath.PortRange{Min: uint16(cfg.RelayPortRange.Min), Max: uint16(cfg.RelayPortRange.Max)}); !got.PeerLocal || got.LocalPeerPorts != want {
		t.Errorf("node peer in the kernel: PeerLocal %v, LocalPeerPorts %+v; want true and the relay port range %+v", got.PeerLocal, got.LocalPeerPorts, want)
	}
}

// TestAgentDropsEntriesOnDisconnect: when the relay's connection ends (the
// relay restarted or died), its channels and quotas leave the kernel.
func TestAgentDropsEntriesOnDisconnect(t *testing.T) {
	cfg := agentTestConfig(t)
	kernel := newFakeKernel()
	socket, _ := startAgent(t, cfg, func([]string) (kernelTable, error) { return kernel, nil })
	cl := dialAgent(t, socket)
	for i, peer := range []string{"10.9.0.1:5000", "10.9.0.2:5000"} {
		if err := cl.Put(agentChannel(cfg, 0x4001+uint16(i), peer)); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	waitFor(t, "the kernel emptied", func() bool { return kernel.len() == 0 })
	kernel.mu.Lock()
	quotas := kernel.quotas
	kernel.mu.Unlock()
	if len(quotas) != 1 || quotas[0] != 20001 {
		t.Errorf("DeleteQuota calls %v, want one for relay port 20001", quotas)
	}
	// The next relay is served.
	if err := dialAgent(t, socket).Put(agentChannel(cfg, 0x4001, "10.9.0.1:5000")); err != nil {
		t.Fatalf("put from the next connection: %v", err)
	}
}

// TestAgentBoundsEntries: no more channels than the relay's quotas allow
// (allocationsTotal x channelsPerAllocation); refreshing one is no new one.
func TestAgentBoundsEntries(t *testing.T) {
	cfg := agentTestConfig(t)
	cfg.Quotas.AllocationsTotal, cfg.Quotas.ChannelsPerAllocation = 1, 2
	kernel := newFakeKernel()
	socket, _ := startAgent(t, cfg, func([]string) (kernelTable, error) { return kernel, nil })
	cl := dialAgent(t, socket)
	for i := range 2 {
		if err := cl.Put(agentChannel(cfg, 0x4001+uint16(i), "10.9.0.1:5000")); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Put(agentChannel(cfg, 0x4001, "10.9.0.1:5000")); err != nil {
		t.Errorf("refreshing a channel at the bound: %v", err)
	}
	if err := cl.Put(agentChannel(cfg, 0x4003, "10.9.0.1:5000")); err == nil || !strings.Contains(err.Error(), "the most it may") {
		t.Errorf("a third channel: %v, want refused", err)
	}
}

// TestAgentWithoutProgram: an agent that could not load the program says
// why in its answer to the hello; the relay gets that as Dial's error.
func TestAgentWithoutProgram(t *testing.T) {
	socket, _ := startAgent(t, agentTestConfig(t), func([]string) (kernelTable, error) {
		return nil, errors.New("attaching to eth0 ingress (TCX needs Linux 6.6+)")
	})
	_, err := wire.Dial(context.Background(), socket)
	if err == nil || !strings.Contains(err.Error(), "TCX needs Linux 6.6+") {
		t.Fatalf("dial: %v, want the load error", err)
	}
}

// TestAgentBatch: a batch's requests are done in order, a refused one
// leaves the others alone, and the answer says which was refused.
func TestAgentBatch(t *testing.T) {
	cfg := agentTestConfig(t)
	kernel := newFakeKernel()
	socket, _ := startAgent(t, cfg, func([]string) (kernelTable, error) { return kernel, nil })
	cl := dialAgent(t, socket)
	a, b := agentChannel(cfg, 0x4001, "10.9.0.1:5000"), agentChannel(cfg, 0x4002, "10.9.0.2:5000")
	refused, err := cl.Batch([]wire.Request{
		{Op: wire.OpPut, Channel: &a},
		{Op: wire.OpPut, Channel: new(agentChannel(cfg, 0x4003, "10.10.0.1:5000"))}, // a private peer
		{Op: wire.OpPut, Channel: &b},
		{Op: wire.OpDelete, Channel: &a},
		{Op: wire.OpDeleteQuota, RelayPort: 20001}, // b still uses it
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"", "refused by the peer policy (private)", "", "", "still has channels"} {
		if got := refused[i]; (want == "") != (got == nil) || (got != nil && !strings.Contains(got.Error(), want)) {
			t.Errorf("request %d: %v, want %q", i, got, want)
		}
	}
	kernel.mu.Lock()
	_, hasB := kernel.channels[keyOf(b)]
	n := len(kernel.channels)
	kernel.mu.Unlock()
	if n != 1 || !hasB {
		t.Errorf("the kernel holds %d channels (b: %v), want b alone", n, hasB)
	}
	// A batch the agent cannot parse ends the connection: the relay cannot
	// know which of it was done.
	if _, err := cl.Batch(nil); err == nil || cl.Err() == nil {
		t.Errorf("an empty batch: %v, connection error %v; want both", err, cl.Err())
	}
}

// TestAgentServesVersion1: a relay of the first version (no batches) is
// answered in its version.
func TestAgentServesVersion1(t *testing.T) {
	cfg := agentTestConfig(t)
	socket, _ := startAgent(t, cfg, func([]string) (kernelTable, error) { return newFakeKernel(), nil })
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := agentChannel(cfg, 0x4001, "10.9.0.1:5000")
	for _, tt := range []struct {
		q           wire.Request
		wantVersion int
	}{
		{wire.Request{Op: wire.OpHello, Version: 1}, 1},
		{wire.Request{Op: wire.OpPut, Channel: &c}, 0},
	} {
		if err := wire.WriteMessage(conn, tt.q); err != nil {
			t.Fatal(err)
		}
		body, err := wire.ReadMessage(conn)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := wire.DecodeResponse(body); err != nil || p.Error != "" || p.Version != tt.wantVersion {
			t.Fatalf("%s: answered %+v, %v; want success, version %d", tt.q.Op, p, err, tt.wantVersion)
		}
	}
}
