//go:build linux

package fastpath_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/test/netlab"
)

// BenchmarkKernel reports the program's own run time per relayed datagram
// (kernel-ns/pkt, from the kernel's BPF statistics) on the two ways a
// client's ChannelData can leave the relay host: to a peer on another host
// (forward), and to the client of another allocation on the same relay
// (same-node), for IPv4 and IPv6, with 100-byte payloads. ns/op includes
// the benchmark's own sending and receiving.
func BenchmarkKernel(b *testing.B) {
	payload := make([]byte, 100)
	for _, f := range families {
		b.Run(f.name+"/forward", func(b *testing.B) {
			client, relay, peer, o := hosts(b, f)
			e := forwardEnds(b, f, client, relay, peer)
			if err := o.Put(e.channel(0x4001, false)); err != nil {
				b.Fatal(err)
			}
			measureKernel(b, relay, e.client, addr(e.listener), e.peer, channelData(0x4001, payload))
		})
		b.Run(f.name+"/same-node", func(b *testing.B) {
			client, relay, _, o := hosts(b, f)
			clientA := client.ListenPacket(f.network, f.hostPort(f.clientNet+"2", 0))
			clientB := client.ListenPacket(f.network, f.hostPort(f.clientNet+"2", 0))
			listener := relay.ListenPacket(f.network, f.hostPort(f.clientNet+"1", 3478))
			relayA := relay.ListenPacket(f.network, f.hostPort(f.peerNet+"1", 40001))
			relayB := relay.ListenPacket(f.network, f.hostPort(f.peerNet+"1", 40002))
			greet(b, listener, clientA)
			greet(b, listener, clientB)
			for _, c := range []fastpath.Channel{
				ends{client: clientA, listener: listener, relay: relayA, peer: relayB}.channel(0x4001, false),
				ends{client: clientB, listener: listener, relay: relayB, peer: relayA}.channel(0x4002, false),
			} {
				c.PeerLocal, c.LocalPeerPorts = true, fastpath.PortRange{Min: 40000, Max: 40099}
				if err := o.Put(c); err != nil {
					b.Fatal(err)
				}
			}
			measureKernel(b, relay, clientA, addr(listener), clientB, channelData(0x4001, payload))
		})
	}
}

// measureKernel sends b.N datagrams from c to dst, each received at out,
// and reports the run time of the programs attached in relay per datagram.
func measureKernel(b *testing.B, relay *netlab.Namespace, c net.PacketConn, dst netip.AddrPort, out net.PacketConn, datagram []byte) {
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	netlab.Require(b, "BPF run-time statistics", err == nil)
	defer stats.Close()
	before := kernelRunTime(b, relay)
	buf := make([]byte, 2048)
	b.ResetTimer()
	for range b.N {
		send(b, c, dst, datagram)
		_ = out.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := out.ReadFrom(buf); err != nil {
			b.Fatalf("datagram not relayed: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(kernelRunTime(b, relay)-before)/float64(b.N), "kernel-ns/pkt")
}

// kernelRunTime is the total run time of the TC ingress programs attached
// to the interfaces of ns.
func kernelRunTime(b *testing.B, ns *netlab.Namespace) time.Duration {
	var total time.Duration
	err := ns.Do(func() error {
		ifaces, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, iface := range ifaces {
			res, err := link.QueryPrograms(link.QueryOptions{Target: iface.Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				continue // no TCX programs there
			}
			for _, ap := range res.Programs {
				p, err := ebpf.NewProgramFromID(ap.ID)
				if err != nil {
					return err
				}
				st, err := p.Stats()
				_ = p.Close()
				if err != nil {
					return err
				}
				total += st.Runtime
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// BenchmarkKernelChannels measures the program alone as channels grow:
// 100 or 10,000 channels (each its own client port and allocation), and
// ChannelData for them round-robin from one raw socket, so that the sender
// keeps no per-client state (in the loopback bench, 10,000 client sockets
// cool every cache on the packet's way). kernel-ns/pkt is the program's
// run time per datagram it relayed.
//
// The datagrams go one per system call, or (the -batch32 runs) 32 per
// sendmmsg, as a NIC's driver hands the kernel a batch of datagrams at a
// time. The program runs inside the sender's system call, so the batches
// show what the return to userspace between two datagrams costs it: where
// the kernel's page tables are switched on every entry without PCIDs
// (kernel page-table isolation on a CPU or hypervisor without them), the
// first datagram after each entry finds the TLB empty.
func BenchmarkKernelChannels(b *testing.B) {
	for _, f := range families {
		for _, run := range []struct {
			channels, perCall int
		}{{100, 1}, {10000, 1}, {100, 32}, {10000, 32}} {
			name := f.name + "/" + strconv.Itoa(run.channels)
			if run.perCall > 1 {
				name += "-batch" + strconv.Itoa(run.perCall)
			}
			b.Run(name, func(b *testing.B) { benchmarkChannels(b, f, run.channels, run.perCall) })
		}
	}
}

func benchmarkChannels(b *testing.B, f family, n, perCall int) {
	client, relay, peer, o := hosts(b, f)
	listener := relay.ListenPacket(f.network, f.hostPort(f.clientNet+"1", 3478))
	sink := peer.ListenPacket(f.network, f.hostPort(f.peerNet+"2", 0))
	clientIP, listenAP := netip.MustParseAddr(f.clientNet+"2"), addr(listener)
	raw := rawUDPSocket(b, client, clientIP, listenAP.Addr())
	// Neighbours resolved both ways, as in real life.
	greet(b, listener, client.ListenPacket(f.network, f.hostPort(f.clientNet+"2", 0)))
	greet(b, relay.ListenPacket(f.network, f.hostPort(f.peerNet+"1", 0)), sink)
	// The relay sockets on the listener's address, as a relay with one bind
	// address binds them (an IPv6 channel's entry in the table holds no
	// address of the relay's own, so one on another address would be in
	// the hash map).
	for i := range n {
		c := fastpath.Channel{
			Client: netip.AddrPortFrom(clientIP, uint16(30000+i)), Listener: listenAP, Number: 0x4001,
			Peer: addr(sink), Relay: netip.AddrPortFrom(listenAP.Addr(), uint16(20000+i)),
			ChannelExpires: time.Now().Add(time.Hour), PermissionExpires: time.Now().Add(time.Hour),
		}
		if err := o.Put(c); err != nil {
			b.Fatal(err)
		}
	}
	go drainQuietly(sink)
	datagrams := make([][]byte, n)
	for i := range datagrams {
		datagrams[i] = udpDatagram(uint16(30000+i), listenAP.Port(), channelData(0x4001, make([]byte, 100)))
	}
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	netlab.Require(b, "BPF run-time statistics", err == nil)
	defer stats.Close()
	before, relayedBefore := kernelRunTime(b, relay), counters(b, o).ToPeer.Packets
	b.ResetTimer()
	sendRoundRobin(b, raw, datagrams, perCall)
	b.StopTimer()
	time.Sleep(100 * time.Millisecond)
	relayed := counters(b, o).ToPeer.Packets - relayedBefore
	if relayed < uint64(b.N)/2 {
		b.Fatalf("the program relayed %d of %d datagrams", relayed, b.N)
	}
	b.ReportMetric(float64(kernelRunTime(b, relay)-before)/float64(relayed), "kernel-ns/pkt")
}

// sendRoundRobin sends b.N of datagrams, in turn, through raw, perCall to
// a system call (sendmmsg).
func sendRoundRobin(b *testing.B, raw *ipv4.PacketConn, datagrams [][]byte, perCall int) {
	msgs := make([]ipv4.Message, perCall)
	for sent := 0; sent < b.N; {
		k := min(perCall, b.N-sent)
		for j := range k {
			msgs[j] = ipv4.Message{Buffers: [][]byte{datagrams[(sent+j)%len(datagrams)]}}
		}
		n, err := raw.WriteBatch(msgs[:k], 0)
		if err != nil {
			b.Fatalf("sendmmsg: %v", err)
		}
		sent += n
	}
}

// rawUDPSocket is a raw socket in ns, from src to dst, for UDP datagrams
// whose header the caller writes (the kernel adds the IP header, and over
// IPv6 the UDP checksum, which IPv6 requires). The x/net type sends on a
// socket of either family.
func rawUDPSocket(b *testing.B, ns *netlab.Namespace, src, dst netip.Addr) *ipv4.PacketConn {
	family, v6 := unix.AF_INET, src.Is6()
	if v6 {
		family = unix.AF_INET6
	}
	var fd int
	err := ns.Do(func() (err error) {
		if fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP); err != nil {
			return err
		}
		if v6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, 6); err != nil {
				return err
			}
		}
		if err := unix.Bind(fd, sockaddrOf(src)); err != nil {
			return err
		}
		return unix.Connect(fd, sockaddrOf(dst))
	})
	if err != nil {
		if fd > 0 {
			_ = unix.Close(fd)
		}
		b.Fatalf("raw socket: %v", err)
	}
	f := os.NewFile(uintptr(fd), "raw UDP")
	defer f.Close() // FilePacketConn holds a copy
	c, err := net.FilePacketConn(f)
	if err != nil {
		b.Fatalf("raw socket: %v", err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return ipv4.NewPacketConn(c)
}

func sockaddrOf(a netip.Addr) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Addr: a.As16()}
}

// udpDatagram is a UDP header and payload, without a checksum: none over
// IPv4 (allowed), and over IPv6 rawUDPSocket's kernel fills it in.
func udpDatagram(src, dst uint16, payload []byte) []byte {
	d := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(d, src)
	binary.BigEndian.PutUint16(d[2:], dst)
	binary.BigEndian.PutUint16(d[4:], uint16(8+len(payload)))
	return append(d, payload...)
}

func drainQuietly(c net.PacketConn) {
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Time{})
	for {
		if _, _, err := c.ReadFrom(buf); err != nil {
			return
		}
	}
}
