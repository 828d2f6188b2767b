package relay

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/relay/fastpath/wire"
)

// stalledKernel is the agent's kernel table held up: every Put waits until
// the test releases it, as an agent that is slow to write a channel. It
// logs what reaches the table, in order.
type stalledKernel struct {
	kernelTable
	entered chan fastpath.Channel // a Put is waiting
	release chan struct{}         // closed: every Put goes on

	mu  sync.Mutex
	ops []string
}

func newStalledKernel(inner kernelTable) *stalledKernel {
	return &stalledKernel{kernelTable: inner, entered: make(chan fastpath.Channel, 16), release: make(chan struct{})}
}

func (k *stalledKernel) Put(c fastpath.Channel) error {
	select {
	case k.entered <- c:
	default:
	}
	<-k.release
	k.log(fmt.Sprintf("put %#x", c.Number))
	return k.kernelTable.Put(c)
}

func (k *stalledKernel) Delete(c fastpath.Channel) error {
	k.log(fmt.Sprintf("delete %#x", c.Number))
	return k.kernelTable.Delete(c)
}

func (k *stalledKernel) DeleteQuota(port uint16) error {
	k.log(fmt.Sprintf("deleteQuota %d", port))
	return k.kernelTable.DeleteQuota(port)
}

func (k *stalledKernel) log(op string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ops = append(k.ops, op)
}

func (k *stalledKernel) logged() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.ops)
}

// startRelayWithStalledAgent runs an agent whose table is inner, held up,
// and a relay on cfg connected to it; cfg's peer policy also allows
// 10.9.0.0/16, for channels that carry nothing.
func startRelayWithStalledAgent(t *testing.T, cfg *config.Relay, inner kernelTable) (*testRelay, *stalledKernel) {
	t.Helper()
	cfg.PeerPolicy.Allow = append(cfg.PeerPolicy.Allow, "10.9.0.0/16")
	cfg.FastPath = config.FastPath{Mode: config.FastPathAuto, Interfaces: []string{"lo"}}
	k := newStalledKernel(inner)
	socket, _ := startAgent(t, cfg, func([]string) (kernelTable, error) { return k, nil })
	cfg.FastPath.Socket = socket
	tr := startRelay(t, cfg, baseCredentials())
	t.Cleanup(func() {
		select {
		case <-k.release:
		default:
			close(k.release)
		}
	})
	waitFor(t, "fast path active through the agent", func() bool {
		st := relayStatus(t, tr).FastPath
		return st != nil && st.Active
	})
	return tr, k
}

// TestFastPathAgentAnswersChannelBindFirst: the relay answers a ChannelBind
// without waiting for the agent to write the channel; until it has, the
// call is relayed in userspace; then the channel is in the kernel's table.
func TestFastPathAgentAnswersChannelBindFirst(t *testing.T) {
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	kernel := newFakeKernel()
	tr, stalled := startRelayWithStalledAgent(t, cfg, kernel)
	peer := startEchoPeer(t, peerIP)
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	if code := c.channelBind(0x4001, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	if got := <-stalled.entered; got.Number != 0x4001 {
		t.Fatalf("the agent is writing channel %#x, want 0x4001", got.Number)
	}
	// Answered while the agent still holds the write: nothing timed out.
	if st := relayStatus(t, tr).FastPath; !st.Active || st.Channels != 1 || st.Pending != 1 {
		t.Fatalf("/status fastPath = %+v during the agent's write, want active, 1 channel, 1 write pending", st)
	}
	const n = 5
	before := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp")
	for i := range n {
		if d := c.roundTrip(peer.addr, 0x4001, []byte("before the kernel has it "+strconv.Itoa(i))); d.channel != 0x4001 {
			t.Fatalf("echo came back as %+v, want ChannelData on 0x4001", d)
		}
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp"); got < before+n {
		t.Errorf("relayed_packets_total{client_to_peer} %v -> %v, want %d more in userspace", before, got, n)
	}
	if kernel.len() != 0 {
		t.Fatal("the channel reached the kernel's table before the agent was released")
	}
	close(stalled.release)
	wantChannels(t, tr, 1)
	if kernel.len() != 1 {
		t.Errorf("the kernel's table holds %d channels, want 1", kernel.len())
	}
}

// TestFastPathAgentWritesInOrder: what the relay queues while the agent is
// busy reaches it in order, a delete after its channel's put, and a channel
// deleted before its put was sent never reaches the kernel.
func TestFastPathAgentWritesInOrder(t *testing.T) {
	kernel := newFakeKernel()
	tr, stalled := startRelayWithStalledAgent(t, baseConfig(t, t.TempDir()), kernel)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	a, b := dialRaw(t, "udp", addr, testUser, testPassword), dialRaw(t, "udp", addr, testUser, testPassword)
	relayA, relayB := a.mustAllocate(false), b.mustAllocate(false)
	if code := a.channelBind(0x4001, netip.MustParseAddrPort("10.9.0.1:5000")); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	<-stalled.entered // a's put is with the agent
	if code := b.channelBind(0x4002, netip.MustParseAddrPort("10.9.0.2:5000")); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	for _, c := range []*rawClient{b, a} { // b's channel while its put waits, then a's while the agent writes it
		if code := c.refresh(0); code != 0 {
			t.Fatalf("Refresh(0): %d", code)
		}
	}
	waitFor(t, "both channels gone from the relay's table", func() bool { return relayStatus(t, tr).FastPath.Channels == 0 })
	close(stalled.release)
	wantChannels(t, tr, 0)
	want := []string{"put 0x4001", fmt.Sprintf("deleteQuota %d", relayB.Port()), "delete 0x4001", fmt.Sprintf("deleteQuota %d", relayA.Port())}
	if got := stalled.logged(); !slices.Equal(got, want) {
		t.Errorf("the kernel's table saw %q, want %q", got, want)
	}
	if kernel.len() != 0 {
		t.Errorf("the kernel's table holds %d channels, want none", kernel.len())
	}
}

// TestFastPathAgentQueueFull: a channel that finds the agent's queue full
// stays in userspace, counted; the ChannelBind is answered all the same.
func TestFastPathAgentQueueFull(t *testing.T) {
	defer func(n int) { agentQueueLimit = n }(agentQueueLimit)
	agentQueueLimit = 2
	kernel := newFakeKernel()
	tr, stalled := startRelayWithStalledAgent(t, baseConfig(t, t.TempDir()), kernel)
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	bind := func(number uint16) {
		t.Helper()
		peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(number)}), 5000)
		if code := c.channelBind(number, peer); code != 0 {
			t.Fatalf("ChannelBind %#x: %d", number, code)
		}
	}
	bind(0x4001)
	<-stalled.entered // with the agent; 0x4002 and 0x4003 fill the queue
	for n := uint16(0x4002); n <= 0x4004; n++ {
		bind(n)
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_fastpath_queue_full_total"); got != 1 {
		t.Errorf("fastpath_queue_full_total = %v, want 1", got)
	}
	if st := relayStatus(t, tr).FastPath; !st.Active || st.QueueFull != 1 || st.Channels != 3 || st.Pending != 3 {
		t.Errorf("/status fastPath = %+v, want active, queueFull 1, 3 channels, 3 writes pending", st)
	}
	close(stalled.release)
	wantChannels(t, tr, 3)
	kernel.mu.Lock()
	defer kernel.mu.Unlock()
	for key := range kernel.channels {
		if key.number == 0x4004 {
			t.Error("the channel refused by the full queue is in the kernel's table")
		}
	}
}

// TestFastPathAgentRefusal: a channel the agent refuses (here its peer
// policy is stricter than the relay's) goes back to userspace: it leaves
// the relay's table once the answer is in.
func TestFastPathAgentRefusal(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	cfg.FastPath = config.FastPath{Mode: config.FastPathAuto, Interfaces: []string{"lo"}}
	kernel := newFakeKernel()
	socket, _ := startAgent(t, cfg, func([]string) (kernelTable, error) { return kernel, nil })
	cfg.PeerPolicy.Allow = []string{"10.9.0.0/16"} // the relay's only
	cfg.FastPath.Socket = socket
	tr := startRelay(t, cfg, baseCredentials())
	waitFor(t, "fast path active through the agent", func() bool {
		st := relayStatus(t, tr).FastPath
		return st != nil && st.Active
	})
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	if code := c.channelBind(0x4001, netip.MustParseAddrPort("10.9.0.1:5000")); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	waitFor(t, "the agent's refusal in the relay's log", func() bool {
		return strings.Contains(tr.logs.String(), "the fast-path agent refused a put")
	})
	wantChannels(t, tr, 0)
	if st := relayStatus(t, tr).FastPath; !st.Active || kernel.len() != 0 {
		t.Errorf("/status fastPath = %+v, kernel's table %d channels; want active and empty", st, kernel.len())
	}
}

// TestFastPathAgentGap: in the kernel itself, a channel whose write the
// agent has not done yet is relayed in userspace, and by the kernel once
// it has. Loading the program needs root.
func TestFastPathAgentGap(t *testing.T) {
	needTool(t, "root (loading the fast path's BPF program)", os.Geteuid() == 0)
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	program, err := fastpath.Load([]string{"lo"})
	if err != nil {
		t.Fatal(err)
	}
	tr, stalled := startRelayWithStalledAgent(t, cfg, program) // the agent closes it
	peer := startEchoPeer(t, peerIP)
	c := dialRaw(t, "udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
	c.mustAllocate(false)
	if code := c.channelBind(0x4001, peer.addr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	<-stalled.entered
	const n = 10
	before := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp")
	for i := range n {
		if d := c.roundTrip(peer.addr, 0x4001, []byte("userspace "+strconv.Itoa(i))); d.channel != 0x4001 {
			t.Fatalf("echo came back as %+v, want ChannelData on 0x4001", d)
		}
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp"); got < before+n {
		t.Errorf("relayed_packets_total{client_to_peer} %v -> %v, want %d more in userspace", before, got, n)
	}
	close(stalled.release)
	wantChannels(t, tr, 1)
	for i := range n {
		if d := c.roundTrip(peer.addr, 0x4001, []byte("kernel "+strconv.Itoa(i))); d.channel != 0x4001 {
			t.Fatalf("echo came back as %+v, want ChannelData on 0x4001", d)
		}
	}
	wantKernelPackets(t, tr, n, n)
}

// TestAgentQueue: a newer write of a channel replaces the queued one and
// goes to the end; a full queue refuses only new channels.
func TestAgentQueue(t *testing.T) {
	defer func(n int) { agentQueueLimit = n }(agentQueueLimit)
	agentQueueLimit = 2
	k := allocKey{network: "udp", port: 3478, client: netip.MustParseAddrPort("198.51.100.7:40000")}
	ch := func(number uint16) fastpath.Channel {
		return fastpath.Channel{Client: k.client, Listener: netip.MustParseAddrPort("0.0.0.0:3478"), Number: number}
	}
	q := newAgentQueue()
	for _, op := range []*agentOp{channelOp(k, wire.OpPut, ch(0x4001)), channelOp(k, wire.OpPut, ch(0x4002))} {
		if !q.add(op, true) {
			t.Fatal("the queue refused a write below its limit")
		}
	}
	if q.add(channelOp(k, wire.OpPut, ch(0x4003)), true) {
		t.Error("a full queue took a new channel")
	}
	if !q.add(channelOp(k, wire.OpDelete, ch(0x4001)), false) || !q.add(quotaOp(20001), false) {
		t.Error("a full queue refused a delete")
	}
	var got []string
	for _, op := range q.take(10) {
		if op.req.Channel != nil {
			got = append(got, fmt.Sprintf("%s %#x", op.req.Op, op.req.Channel.Number))
		} else {
			got = append(got, fmt.Sprintf("%s %d", op.req.Op, op.req.RelayPort))
		}
	}
	if want := []string{"put 0x4002", "delete 0x4001", "deleteQuota 20001"}; !slices.Equal(got, want) {
		t.Errorf("took %q, want %q", got, want)
	}
}
