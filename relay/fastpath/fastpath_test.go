//go:build linux

package fastpath_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/test/netlab"
)

// These tests load the real program into network namespaces and send real
// datagrams through it; they need root (netlab skips without, fails in CI).

// loadIn loads the program in ns, attached to interfaces there.
func loadIn(t testing.TB, ns *netlab.Namespace, interfaces ...string) *fastpath.Offload {
	t.Helper()
	var o *fastpath.Offload
	if err := ns.Do(func() (err error) { o, err = fastpath.Load(interfaces); return err }); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return o
}

// ends are the four sockets of a relayed channel: the client, the relay's
// listener and relay socket (they receive whatever the program passes on)
// and the peer.
type ends struct {
	client, listener, relay, peer net.PacketConn
}

func (e ends) channel(number uint16, local bool) fastpath.Channel {
	return fastpath.Channel{
		Client: addr(e.client), Listener: addr(e.listener), Number: number,
		Peer: addr(e.peer), Relay: addr(e.relay),
		ClientLocal: local, PeerLocal: local, LocalPeerPorts: fastpath.AllPorts,
		ChannelExpires:    time.Now().Add(time.Minute),
		PermissionExpires: time.Now().Add(time.Minute),
	}
}

func loopbackEnds(t *testing.T, ns *netlab.Namespace) ends {
	return ends{
		client:   ns.ListenPacket("udp4", "127.0.0.2:0"),
		listener: ns.ListenPacket("udp4", "127.0.0.1:0"),
		relay:    ns.ListenPacket("udp4", "127.0.0.1:0"),
		peer:     ns.ListenPacket("udp4", "127.0.0.3:0"),
	}
}

// loopbackEnds6 are the four ends on ::1, IPv6's only loopback address.
func loopbackEnds6(t *testing.T, ns *netlab.Namespace) ends {
	return ends{
		client:   ns.ListenPacket("udp6", "[::1]:0"),
		listener: ns.ListenPacket("udp6", "[::1]:0"),
		relay:    ns.ListenPacket("udp6", "[::1]:0"),
		peer:     ns.ListenPacket("udp6", "[::1]:0"),
	}
}

func TestLoopbackRelaysBothWays(t *testing.T) {
	for name, ends := range map[string]func(*testing.T, *netlab.Namespace) ends{"IPv4": loopbackEnds, "IPv6": loopbackEnds6} {
		t.Run(name, func(t *testing.T) { testLoopbackRelaysBothWays(t, ends) })
	}
}

func testLoopbackRelaysBothWays(t *testing.T, loopbackEnds func(*testing.T, *netlab.Namespace) ends) {
	ns := netlab.New(t).Namespace("relay")
	o := loadIn(t, ns, "lo")
	e := loopbackEnds(t, ns)
	if err := o.Put(e.channel(0x4001, true)); err != nil {
		t.Fatal(err)
	}

	send(t, e.client, addr(e.listener), channelData(0x4001, []byte("ping")))
	expect(t, e.peer, addr(e.relay), []byte("ping"))
	send(t, e.peer, addr(e.relay), []byte("pong!"))
	expect(t, e.client, addr(e.listener), channelData(0x4001, []byte("pong!")))
	expectNothing(t, e.listener, e.relay)

	c := counters(t, o)
	if c.ToPeer != (fastpath.Stat{Packets: 1, Bytes: 4}) || c.FromPeer != (fastpath.Stat{Packets: 1, Bytes: 5}) {
		t.Errorf("counters = %+v, want one packet of 4 bytes to the peer and one of 5 from it", c)
	}
	// Odd and even lengths, across the 256-byte chunks in which the
	// program sums an IPv6 payload for a local delivery.
	for _, n := range []int{1, 255, 256, 257, 1000, 1201, 1536} {
		data := []byte(strings.Repeat("x", n))
		send(t, e.client, addr(e.listener), channelData(0x4001, data))
		expect(t, e.peer, addr(e.relay), data)
		send(t, e.peer, addr(e.relay), data)
		expect(t, e.client, addr(e.listener), channelData(0x4001, data))
	}
	c = counters(t, o)

	// What the program does not relay reaches the relay's sockets as
	// before: an unbound channel, a STUN message, a deleted channel.
	send(t, e.client, addr(e.listener), channelData(0x4002, []byte("unbound")))
	expect(t, e.listener, addr(e.client), channelData(0x4002, []byte("unbound")))
	stun := make([]byte, 20)
	binary.BigEndian.PutUint16(stun, 0x0001)
	send(t, e.client, addr(e.listener), stun)
	expect(t, e.listener, addr(e.client), stun)
	if err := o.Delete(e.channel(0x4001, true)); err != nil {
		t.Fatal(err)
	}
	send(t, e.client, addr(e.listener), channelData(0x4001, []byte("after")))
	expect(t, e.listener, addr(e.client), channelData(0x4001, []byte("after")))
	send(t, e.peer, addr(e.relay), []byte("after"))
	expect(t, e.relay, addr(e.peer), []byte("after"))
	if got := counters(t, o); got != c {
		t.Errorf("counters moved after the channel was deleted: %+v, then %+v", c, got)
	}
}

// An IPv6 datagram on lo whose sender finished its checksum (here a raw
// frame; a UDP socket's datagram on lo leaves it for the device, and
// TestLoopbackRelaysBothWays covers that) is relayed with its checksum
// updated rather than computed again: the peer's kernel, which checks it
// in full, takes every one (lengths odd and even, bytes that differ), and
// a datagram that arrived with a wrong checksum still has one, so the
// peer's kernel drops it (computed again, it would pass as sound).
func TestLoopbackFinishedIPv6Checksum(t *testing.T) {
	ns := netlab.New(t).Namespace("relay")
	o := loadIn(t, ns, "lo")
	e := loopbackEnds6(t, ns)
	c := e.channel(0x4001, true)
	if err := o.Put(c); err != nil {
		t.Fatal(err)
	}
	sendRaw := func(frame []byte) {
		t.Helper()
		if err := ns.Do(func() error { return sendFrame(1, unix.ETH_P_IPV6, frame) }); err != nil {
			t.Fatal(err)
		}
	}
	v6 := families[1]
	csumErrors := udpInCsumErrors(t, ns, v6)
	for _, n := range []int{1, 4, 255, 256, 1000, 1201} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		sendRaw(udp6Frame(c.Client, c.Listener, channelData(c.Number, data)))
		expect(t, e.peer, addr(e.relay), data)
	}
	if got := udpInCsumErrors(t, ns, v6); got != csumErrors {
		t.Errorf("UDP checksum errors %d, then %d", csumErrors, got)
	}
	if got := counters(t, o).ToPeer.Packets; got != 6 {
		t.Errorf("the program relayed %d datagrams; want all 6", got)
	}

	corrupt := udp6Frame(c.Client, c.Listener, channelData(c.Number, []byte("corrupt")))
	corrupt[len(corrupt)-1] ^= 0x40 // after the checksum was computed
	sendRaw(corrupt)
	expectNothing(t, e.peer)
	if got := udpInCsumErrors(t, ns, v6); got != csumErrors+1 {
		t.Errorf("UDP checksum errors %d after a corrupt datagram, want %d", got, csumErrors+1)
	}
}

func TestExpiredEntriesPassToUserspace(t *testing.T) {
	ns := netlab.New(t).Namespace("relay")
	o := loadIn(t, ns, "lo")
	e := loopbackEnds(t, ns)
	ch := e.channel(0x4010, true)
	ch.PermissionExpires = time.Now().Add(-time.Second) // the permission is over, the channel not yet
	if err := o.Put(ch); err != nil {
		t.Fatal(err)
	}
	send(t, e.client, addr(e.listener), channelData(0x4010, []byte("still bound")))
	expect(t, e.peer, addr(e.relay), []byte("still bound"))
	send(t, e.peer, addr(e.relay), []byte("no permission"))
	expect(t, e.relay, addr(e.peer), []byte("no permission"))

	ch.ChannelExpires = time.Now().Add(-time.Second)
	if err := o.Put(ch); err != nil {
		t.Fatal(err)
	}
	send(t, e.client, addr(e.listener), channelData(0x4010, []byte("expired")))
	expect(t, e.listener, addr(e.client), channelData(0x4010, []byte("expired")))
	if c := counters(t, o); c.ToPeer.Packets != 1 || c.FromPeer.Packets != 0 {
		t.Errorf("counters = %+v, want only the first datagram relayed", c)
	}
}

func TestBandwidthQuota(t *testing.T) {
	ns := netlab.New(t).Namespace("relay")
	o := loadIn(t, ns, "lo")
	e := loopbackEnds(t, ns)
	ch := e.channel(0x4020, true)
	ch.BytesPerSecond = 1000 // the bucket holds 64 KiB: 65 datagrams of 1000 bytes, then ~1 a second
	if err := o.Put(ch); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1000)
	const sent = 100
	for range sent {
		send(t, e.client, addr(e.listener), channelData(0x4020, payload))
	}
	got := drain(e.peer)
	c := counters(t, o)
	if got < 60 || got > 70 {
		t.Errorf("peer got %d of %d datagrams, want 65 (+/- a few): the quota's burst", got, sent)
	}
	if c.ToPeer.Packets != uint64(got) || c.DroppedToPeer.Packets != uint64(sent-got) {
		t.Errorf("counters = %+v, want %d relayed and %d dropped", c, got, sent-got)
	}
	expectNothing(t, e.listener)

	// The allocation's end takes its buckets: no quota after that.
	if err := o.DeleteQuota(addr(e.relay).Port()); err != nil {
		t.Fatal(err)
	}
	const more = 50 // over what is left of the bucket; under what the peer's socket buffer holds
	for range more {
		send(t, e.client, addr(e.listener), channelData(0x4020, payload))
	}
	if got := drain(e.peer); got != more {
		t.Errorf("peer got %d of %d datagrams after DeleteQuota, want all", got, more)
	}
}

// TestPeerSlots: the peer side holds four channels per allocation (an
// array entry at the relay port). A fifth is refused, so the relay keeps
// it in userspace, until one of the four goes; and a relay port belongs to
// one allocation.
func TestPeerSlots(t *testing.T) {
	ns := netlab.New(t).Namespace("relay")
	o := loadIn(t, ns, "lo")
	e := loopbackEnds(t, ns)
	var chans []fastpath.Channel
	for i := range 5 {
		e.peer = ns.ListenPacket("udp4", "127.0.0.3:0")
		chans = append(chans, e.channel(0x4001+uint16(i), true))
	}
	for _, c := range chans[:4] {
		if err := o.Put(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Put(chans[4]); err == nil {
		t.Fatal("a fifth channel of one allocation was taken")
	}
	if err := o.Delete(chans[1]); err != nil {
		t.Fatal(err)
	}
	if err := o.Put(chans[4]); err != nil {
		t.Fatalf("the fifth channel after one of four went: %v", err)
	}
	send(t, e.peer, addr(e.relay), []byte("fifth"))
	expect(t, e.client, addr(e.listener), channelData(0x4005, []byte("fifth")))

	other := chans[0]
	other.Client = addr(ns.ListenPacket("udp4", "127.0.0.4:0"))
	if err := o.Put(other); err == nil {
		t.Error("another client's channel was taken on a relay port in use")
	}
}

// TestLocalPeerSharingARelayPort: a local peer on another address but the
// same port as an allocation's relay socket is that peer, not the
// allocation: the kernel delivers to it.
func TestLocalPeerSharingARelayPort(t *testing.T) {
	ns := netlab.New(t).Namespace("relay")
	o := loadIn(t, ns, "lo")
	other := loopbackEnds(t, ns)
	if err := o.Put(other.channel(0x4001, true)); err != nil {
		t.Fatal(err)
	}
	e := loopbackEnds(t, ns)
	e.peer = ns.ListenPacket("udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), addr(other.relay).Port()).String())
	if err := o.Put(e.channel(0x4002, true)); err != nil {
		t.Fatal(err)
	}
	send(t, e.client, addr(e.listener), channelData(0x4002, []byte("to the peer")))
	expect(t, e.peer, addr(e.relay), []byte("to the peer"))
}

// family is the addressing of a test network: the client's link and the
// peer's link of the relay, each a /24 or /64 with .1/::1 on the relay.
type family struct {
	name, network string
	clientNet     string // the relay's address is clientNet+"1", the client's clientNet+"2"
	peerNet       string // the same on the peer's side
	bits          string
}

var families = []family{
	{name: "IPv4", network: "udp4", clientNet: "10.61.1.", peerNet: "10.61.2.", bits: "/24"},
	{name: "IPv6", network: "udp6", clientNet: "fd61:1::", peerNet: "fd61:2::", bits: "/64"},
}

func (f family) hostPort(ip string, port int) string {
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// hosts puts client, relay and peer in three namespaces joined by veth
// pairs, with checksum offload off at the senders so every receiving kernel
// checks the UDP checksums the program rewrote. The program is attached to
// both of the relay's links.
func hosts(t testing.TB, f family) (client, relay, peer *netlab.Namespace, o *fastpath.Offload) {
	lab := netlab.New(t)
	client, relay, peer = lab.Namespace("client"), lab.Namespace("relay"), lab.Namespace("peer")
	cIf, rcIf := lab.Link(client, f.clientNet+"2"+f.bits, relay, f.clientNet+"1"+f.bits)
	rpIf, pIf := lab.Link(relay, f.peerNet+"1"+f.bits, peer, f.peerNet+"2"+f.bits)
	client.DefaultRoute(f.clientNet + "1")
	peer.DefaultRoute(f.peerNet + "1")
	relay.EnableForwarding()
	_, err := exec.LookPath("ethtool")
	netlab.Require(t, "ethtool (Debian: ethtool)", err == nil)
	client.Exec("ethtool", "-K", cIf, "tx", "off")
	peer.Exec("ethtool", "-K", pIf, "tx", "off")
	return client, relay, peer, loadIn(t, relay, rcIf, rpIf)
}

// forwardEnds are the ends of a channel between a client and a peer on
// other hosts (hosts). The relay has talked to both before (neighbours
// resolved), as it has answered the client's Allocate and sent to the peer
// in real life.
func forwardEnds(t testing.TB, f family, client, relay, peer *netlab.Namespace) ends {
	e := ends{
		client:   client.ListenPacket(f.network, f.hostPort(f.clientNet+"2", 0)),
		listener: relay.ListenPacket(f.network, f.hostPort(f.clientNet+"1", 3478)),
		relay:    relay.ListenPacket(f.network, f.hostPort(f.peerNet+"1", 0)),
		peer:     peer.ListenPacket(f.network, f.hostPort(f.peerNet+"2", 0)),
	}
	greet(t, e.listener, e.client)
	greet(t, e.relay, e.peer)
	return e
}

// TestForwardsBetweenHosts relays between a client and a peer on other
// hosts, over IPv4 and IPv6 (where the UDP checksum is mandatory), with
// the relay socket on an address of its own (an IPv6 channel then in the
// hash map) and on the listener's (in the table).
func TestForwardsBetweenHosts(t *testing.T) {
	for _, f := range families {
		for _, onListener := range []bool{false, true} {
			name := f.name + "/relay on an address of its own"
			if onListener {
				name = f.name + "/relay on the listener's address"
			}
			t.Run(name, func(t *testing.T) {
				client, relay, peer, o := hosts(t, f)
				e := forwardEnds(t, f, client, relay, peer)
				if onListener {
					e.relay = relay.ListenPacket(f.network, f.hostPort(f.clientNet+"1", 0))
					greet(t, e.relay, e.peer)
				}
				c := e.channel(0x4abc, false)
				if err := o.Put(c); err != nil {
					t.Fatal(err)
				}
				if want := onListener || f.name == "IPv4"; fastpath.InSlotTable(o, c) != want {
					t.Errorf("in the table: %v, want %v", !want, want)
				}

				for i := range 20 {
					up := []byte(strings.Repeat("u", 1+i*61)) // odd and even lengths
					send(t, e.client, addr(e.listener), channelData(0x4abc, up))
					expect(t, e.peer, addr(e.relay), up)
					down := []byte(strings.Repeat("d", 1+i*67))
					send(t, e.peer, addr(e.relay), down)
					expect(t, e.client, addr(e.listener), channelData(0x4abc, down))
				}
				expectNothing(t, e.listener, e.relay)
				if c := counters(t, o); c.ToPeer.Packets != 20 || c.FromPeer.Packets != 20 {
					t.Errorf("counters = %+v, want 20 datagrams each way through the kernel", c)
				}
				for _, ns := range []*netlab.Namespace{client, peer} {
					if n := udpInCsumErrors(t, ns, f); n != 0 {
						t.Errorf("%s: %d UDP checksum errors", ns.Name, n)
					}
				}
			})
		}
	}
}

// TestKeptHopFollowsANeighbourChange: a change to the relay host's
// neighbours ends the next hops the program keeps. The peer's link changes
// its MAC address, and the relay's neighbour entry with it; datagrams must
// reach the peer after that, where a hop kept past the change would send
// them to the old address, which the peer's link does not take. The
// periodic raise of the generation is off, so only the relay's hearing of
// the change can have ended the hop.
func TestKeptHopFollowsANeighbourChange(t *testing.T) {
	defer fastpath.SetHopRefresh(time.Hour)()
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			kh := keptHop(t, f)
			newMAC := "02:00:5e:61:00:02"
			kh.peer.Exec("ip", "link", "set", "dev", deviceTowards(t, kh.peer, addr(kh.e.relay).Addr()), "address", newMAC)
			kh.relay.Exec("ip", "neigh", "replace", kh.peerIP.String(), "lladdr", newMAC, "nud", "reachable",
				"dev", deviceTowards(t, kh.relay, kh.peerIP))
			// The generation rises on the relay's own time (hopCoalesce).
			for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
				n, err := fastpath.KeptHopsTo(kh.o, kh.peerIP)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				if time.Since(start) > 2*time.Second {
					t.Fatalf("%d hops to the peer still kept 2s after its neighbour entry changed", n)
				}
			}
			before := counters(t, kh.o)
			for i := range 5 {
				kh.relayOnce(fmt.Sprintf("after  %d", i))
			}
			if n := counters(t, kh.o).Sub(before).ToPeer.Packets; n != 5 {
				t.Errorf("%d of the 5 datagrams after the change relayed in the kernel, want all", n)
			}
		})
	}
}

// TestKeptHopIsUsed: a datagram on a way with a kept hop does not ask the
// kernel. With the generation held (no raise at all), the relay's neighbour
// entry for the peer goes; asked, the kernel would have no neighbour and
// the datagram would pass to userspace (the relay socket), but on the kept
// hop it still reaches the peer.
func TestKeptHopIsUsed(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			kh := keptHop(t, f)
			fastpath.StopHopRaises(kh.o)
			// Kept under the generation that now holds (a raise may have
			// come between the first datagrams and the stop).
			kh.relayOnce("stopped ")
			if n, err := fastpath.KeptHopsTo(kh.o, kh.peerIP); err != nil || n == 0 {
				t.Fatalf("kept hops to the peer: %d (%v), want at least one", n, err)
			}
			kh.relay.Exec("ip", "neigh", "del", kh.peerIP.String(), "dev", deviceTowards(t, kh.relay, kh.peerIP))
			kh.relayOnce("after  0")
			expectNothing(t, kh.e.listener, kh.e.relay)
		})
	}
}

// keptHopWay is a channel forwarded between hosts whose next hop towards
// the peer the program keeps, on the one CPU the test sends from.
type keptHopWay struct {
	relay, peer *netlab.Namespace
	o           *fastpath.Offload
	e           ends
	peerIP      netip.Addr
	relayOnce   func(what string)
}

func keptHop(t *testing.T, f family) keptHopWay {
	client, relay, peer, o := hosts(t, f)
	e := forwardEnds(t, f, client, relay, peer)
	if err := o.Put(e.channel(0x4abc, false)); err != nil {
		t.Fatal(err)
	}
	// One CPU sends, so the program runs on it, in the softirq of the
	// sending system call: the hop is kept there, and every datagram
	// after meets it.
	pinToOneCPU(t)
	kh := keptHopWay{relay: relay, peer: peer, o: o, e: e, peerIP: addr(e.peer).Addr()}
	// All of one length, so that none is longer than the one that found
	// the hop.
	kh.relayOnce = func(what string) {
		t.Helper()
		data := []byte(what)
		send(t, e.client, addr(e.listener), channelData(0x4abc, data))
		expect(t, e.peer, addr(e.relay), data)
	}
	// The namespaces' set-up still brings notifications, each of which
	// raises the generation: a hop kept just before one is stale at once.
	// So relay until one is seen kept (each try relays, then looks).
	kept := 0
	for try := 0; kept == 0 && try < 20; try++ {
		kh.relayOnce(fmt.Sprintf("before%02d", try))
		n, err := fastpath.KeptHopsTo(o, kh.peerIP)
		if err != nil {
			t.Fatal(err)
		}
		kept = n
	}
	if kept == 0 {
		t.Fatal("no hop to the peer kept after 20 datagrams")
	}
	return kh
}

// pinToOneCPU keeps the calling goroutine on its thread and the thread on
// one CPU until the test ends.
func pinToOneCPU(t *testing.T) {
	runtime.LockOSThread()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	for cpu := range 1024 {
		if all.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.SchedSetaffinity(0, &all)
		runtime.UnlockOSThread()
	})
}

// deviceTowards is the interface through which ns reaches ip.
func deviceTowards(t *testing.T, ns *netlab.Namespace, ip netip.Addr) string {
	t.Helper()
	fields := strings.Fields(ns.Exec("ip", "-o", "route", "get", ip.String()))
	for i := 0; i+1 < len(fields); i++ {
		if fields[i] == "dev" {
			return fields[i+1]
		}
	}
	t.Fatalf("%s: no route to %s: %v", ns.Name, ip, fields)
	return ""
}

// TestSameNodeCall relays a call whose two clients use allocations on the
// same relay: each client's peer is the other allocation's relay socket, an
// address of the relay host on a relay port. The program hands A's
// ChannelData straight to B's client as ChannelData on B's channel, and the
// datagram never reaches a relay socket. A peer on another port of the
// host is not relayed in the kernel.
func TestSameNodeCall(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			client, relay, _, o := hosts(t, f)
			relayPorts := fastpath.PortRange{Min: 40000, Max: 40099}
			clientA := client.ListenPacket(f.network, f.hostPort(f.clientNet+"2", 0))
			clientB := client.ListenPacket(f.network, f.hostPort(f.clientNet+"2", 0))
			listener := relay.ListenPacket(f.network, f.hostPort(f.clientNet+"1", 3478))
			relayA := relay.ListenPacket(f.network, f.hostPort(f.peerNet+"1", 40001))
			relayB := relay.ListenPacket(f.network, f.hostPort(f.peerNet+"1", 40002))
			other := relay.ListenPacket(f.network, f.hostPort(f.peerNet+"1", 40200)) // a node port outside the range
			greet(t, listener, clientA)
			greet(t, listener, clientB)
			ab := ends{client: clientA, listener: listener, relay: relayA, peer: relayB}.channel(0x4001, false)
			ba := ends{client: clientB, listener: listener, relay: relayB, peer: relayA}.channel(0x4002, false)
			toOther := ends{client: clientA, listener: listener, relay: relayA, peer: other}.channel(0x4003, false)
			for _, c := range []*fastpath.Channel{&ab, &ba, &toOther} {
				c.PeerLocal, c.LocalPeerPorts = true, relayPorts
			}
			for _, c := range []fastpath.Channel{ab, ba} {
				if err := o.Put(c); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.Put(toOther); err == nil {
				t.Error("Put took a channel to a node port outside the relay port range")
			}

			for i := range 10 {
				data := []byte(strings.Repeat("a", 1+i*101))
				send(t, clientA, addr(listener), channelData(0x4001, data))
				expect(t, clientB, addr(listener), channelData(0x4002, data))
				data = []byte(strings.Repeat("b", 2+i*97))
				send(t, clientB, addr(listener), channelData(0x4002, data))
				expect(t, clientA, addr(listener), channelData(0x4001, data))
			}
			expectNothing(t, listener, relayA, relayB)
			if c := counters(t, o); c.ToPeer.Packets != 20 || c.FromPeer.Packets != 20 {
				t.Errorf("counters = %+v, want 20 datagrams each way, counted for both allocations", c)
			}
			if n := udpInCsumErrors(t, client, f); n != 0 {
				t.Errorf("client: %d UDP checksum errors", n)
			}

			// The node port outside the range, and B once its channel is
			// gone (a permission alone is userspace's, with Data
			// indications): the relay's listener gets the datagrams.
			send(t, clientA, addr(listener), channelData(0x4003, []byte("other port")))
			expect(t, listener, addr(clientA), channelData(0x4003, []byte("other port")))
			if err := o.Delete(ba); err != nil {
				t.Fatal(err)
			}
			send(t, clientA, addr(listener), channelData(0x4001, []byte("B unbound")))
			expect(t, listener, addr(clientA), channelData(0x4001, []byte("B unbound")))
			expectNothing(t, other, relayB)
		})
	}
}

// greet sends a datagram from a to b, so that the hosts have resolved each
// other's link-layer addresses, as a relay has after answering a client.
func greet(t testing.TB, a, b net.PacketConn) {
	t.Helper()
	send(t, a, addr(b), []byte("hello"))
	expect(t, b, addr(a), []byte("hello"))
}

func addr(c net.PacketConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func channelData(number uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data))
	binary.BigEndian.PutUint16(b, number)
	binary.BigEndian.PutUint16(b[2:], uint16(len(data)))
	return append(b, data...)
}

func send(t testing.TB, from net.PacketConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := from.WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// expect reads one datagram on c and checks its source and content.
func expect(t testing.TB, c net.PacketConn, from netip.AddrPort, want []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("%v: waiting for %q from %v: %v", addr(c), abbrev(want), from, err)
	}
	if got := src.(*net.UDPAddr).AddrPort(); got != from || string(buf[:n]) != string(want) {
		t.Fatalf("%v got %q from %v, want %q from %v", addr(c), abbrev(buf[:n]), got, abbrev(want), from)
	}
}

// expectNothing checks that nothing is waiting on the sockets.
func expectNothing(t *testing.T, conns ...net.PacketConn) {
	t.Helper()
	buf := make([]byte, 2048)
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, src, err := c.ReadFrom(buf); err == nil {
			t.Errorf("%v got %q from %v; want nothing", addr(c), abbrev(buf[:n]), src)
		}
	}
}

// drain counts the datagrams arriving on c until it is quiet.
func drain(c net.PacketConn) int {
	buf := make([]byte, 2048)
	n := 0
	for {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := c.ReadFrom(buf); err != nil {
			return n
		}
		n++
	}
}

func counters(t testing.TB, o *fastpath.Offload) fastpath.Counters {
	t.Helper()
	c, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func abbrev(b []byte) string {
	if len(b) > 24 {
		return string(b[:24]) + "..."
	}
	return string(b)
}

// udpInCsumErrors reads the namespace's count of UDP datagrams dropped for a
// bad checksum (/proc/net/snmp, or /proc/net/snmp6 for IPv6).
func udpInCsumErrors(t *testing.T, ns *netlab.Namespace, f family) int {
	t.Helper()
	if f.network == "udp6" {
		for _, line := range strings.Split(ns.Exec("cat", "/proc/net/snmp6"), "\n") {
			if fields := strings.Fields(line); len(fields) == 2 && fields[0] == "Udp6InCsumErrors" {
				n, err := strconv.Atoi(fields[1])
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no Udp6InCsumErrors in /proc/net/snmp6")
	}
	var header []string
	for _, line := range strings.Split(ns.Exec("cat", "/proc/net/snmp"), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i, name := range header {
			if name == "InCsumErrors" && i < len(fields) {
				n, err := strconv.Atoi(fields[i])
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
	}
	t.Fatal("no Udp InCsumErrors in /proc/net/snmp")
	return 0
}

// udp6Frame is an Ethernet frame (zero MAC addresses, as lo has) with an
// IPv6 UDP datagram from src to dst, its checksum filled in.
func udp6Frame(src, dst netip.AddrPort, payload []byte) []byte {
	const ethLen, ip6Len, udpLen = 14, 40, 8
	b := make([]byte, ethLen+ip6Len+udpLen+len(payload))
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IPV6)
	ip := b[ethLen:]
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:], uint16(udpLen+len(payload)))
	ip[6], ip[7] = unix.IPPROTO_UDP, 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	udp := ip[ip6Len:]
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen+len(payload)))
	copy(udp[udpLen:], payload)
	// The checksum covers a pseudo-header (addresses, length, protocol)
	// and the datagram.
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(ip[8:40])
	sum += uint32(udpLen+len(payload)) + unix.IPPROTO_UDP
	add(udp)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	check := ^uint16(sum)
	if check == 0 {
		check = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], check)
	return b
}

// sendFrame sends an Ethernet frame of protocol proto out of the
// interface with index ifindex (in the calling thread's namespace); out
// of lo, it comes back in as received.
func sendFrame(ifindex int, proto uint16, frame []byte) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	network := binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, proto)) // as the kernel reads it
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: network})
}
