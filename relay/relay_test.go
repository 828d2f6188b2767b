package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// TestTransportsWithPionClient makes real allocations with pion's TURN
// client over UDP, TCP, TLS and DTLS and relays to a UDP peer and back.
func TestTransportsWithPionClient(t *testing.T) {
	peerIP := localAddr(t, false, false)
	dir := t.TempDir()
	cfg := baseConfig(t, dir)
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)
	roots := x509.NewCertPool()
	pemBytes, err := os.ReadFile(cfg.Listeners[2].CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(pemBytes)

	tcpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.tlsPort))
	dialers := map[string]func() (net.PacketConn, error){
		"UDP": func() (net.PacketConn, error) { return net.ListenPacket("udp4", "127.0.0.1:0") },
		"TCP": func() (net.PacketConn, error) {
			c, err := net.Dial("tcp", tcpAddr)
			if err != nil {
				return nil, err
			}
			return turn.NewSTUNConn(c), nil
		},
		"TLS": func() (net.PacketConn, error) {
			c, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
			if err != nil {
				return nil, err
			}
			return turn.NewSTUNConn(c), nil
		},
		"DTLS": func() (net.PacketConn, error) {
			raddr, _ := net.ResolveUDPAddr("udp", tlsAddr)
			c, err := dtls.Dial("udp", raddr, &dtls.Config{RootCAs: roots, ServerName: "localhost", ExtendedMasterSecret: dtls.RequireExtendedMasterSecret})
			if err != nil {
				return nil, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			if err := c.HandshakeContext(ctx); err != nil {
				return nil, err
			}
			return turn.NewSTUNConn(c), nil
		},
	}
	for _, name := range []string{"UDP", "TCP", "TLS", "DTLS"} {
		t.Run(name, func(t *testing.T) {
			conn, err := dialers[name]()
			if err != nil {
				t.Fatal(err)
			}
			server := tcpAddr
			if name == "TLS" || name == "DTLS" {
				server = tlsAddr
			}
			client, err := turn.NewClient(&turn.ClientConfig{
				STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
				Username: testUser, Password: testPassword, Realm: testRealm,
				LoggerFactory: quietLoggers(),
				// A DTLS conn does not reveal its family; the peer is IPv4.
				RequestedAddressFamily: turn.RequestedAddressFamilyIPv4,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if err := client.Listen(); err != nil {
				t.Fatal(err)
			}
			relayConn, err := client.Allocate()
			if err != nil {
				t.Fatalf("allocate over %s: %v", name, err)
			}
			defer relayConn.Close()
			echoThrough(t, relayConn, net.UDPAddrFromAddrPort(peer.addr), "hello over "+name)
		})
	}
}

// echoThrough sends msg to peer on a relayed conn until its echo returns.
func echoThrough(t *testing.T, relayConn net.PacketConn, peer net.Addr, msg string) {
	t.Helper()
	buf := make([]byte, 1500)
	for attempt := 0; attempt < 5; attempt++ {
		if _, err := relayConn.WriteTo([]byte(msg), peer); err != nil {
			t.Fatalf("write to peer: %v", err)
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := relayConn.ReadFrom(buf)
		if err != nil {
			continue
		}
		if string(buf[:n]) != msg || from.String() != peer.String() {
			t.Fatalf("got %q from %s, want %q from %s", buf[:n], from, msg, peer)
		}
		return
	}
	t.Fatalf("no echo from %s", peer)
}

// TestSendAndChannelData relays with a Send indication and with ChannelData
// over UDP and TCP client connections, and checks the way back: a Data
// indication naming the peer, then ChannelData on the bound channel.
func TestSendAndChannelData(t *testing.T) {
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			c := dialRaw(t, network, net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port)), testUser, testPassword)
			c.mustAllocate(false)
			if code := c.createPermission(peer.addr.Addr()); code != 0 {
				t.Fatalf("CreatePermission: %d", code)
			}
			if d := c.roundTrip(peer.addr, 0, []byte("via send indication")); d.from != peer.addr || d.channel != 0 {
				t.Fatalf("echo came back as %+v, want a Data indication from %s", d, peer.addr)
			}
			if code := c.channelBind(0x4001, peer.addr); code != 0 {
				t.Fatalf("ChannelBind: %d", code)
			}
			if d := c.roundTrip(peer.addr, 0x4001, []byte("via channel data")); d.channel != 0x4001 {
				t.Fatalf("echo came back as %+v, want ChannelData on 0x4001", d)
			}
		})
	}
	if got := counterValue(t, tr.Relay, "turnpike_relay_relayed_packets_total", "direction", dirToPeer, "transport", "udp"); got < 4 {
		t.Errorf("relayed client_to_peer packets = %v, want >= 4", got)
	}
}

// TestPeerPolicyOverTheWire sends every bypass spelling on the wire and
// expects 403 for CreatePermission and ChannelBind, on allocations made
// over UDP and TCP, and for Connect on an RFC 6062 TCP allocation.
func TestPeerPolicyOverTheWire(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	cfg.TCPRelay = true
	tr := startRelay(t, cfg, baseCredentials())
	denied := []string{
		"127.0.0.1", "::1", "::ffff:127.0.0.1", "::127.0.0.1", "0.0.0.0",
		"169.254.169.254", "10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::",
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	for _, network := range []string{"udp", "tcp"} {
		for _, p := range denied {
			peer := netip.MustParseAddr(p)
			// The allocation's family must match the peer's as written on
			// the wire (else 443): ::ffff:a.b.c.d counts as IPv4.
			v6 := peer.Is6() && !peer.Is4In6()
			t.Run(network+"/"+p, func(t *testing.T) {
				if v6 {
					needTool(t, "IPv6 loopback (::1) for IPv6 allocations", haveIPv6())
				}
				c := dialRaw(t, network, addr, testUser, testPassword)
				c.mustAllocate(v6)
				if code := c.createPermission(peer); code != 403 {
					t.Errorf("CreatePermission %s: got %d, want 403", p, code)
				}
				if code := c.channelBind(0x4000, netip.AddrPortFrom(peer, 5000)); code != 403 {
					t.Errorf("ChannelBind %s: got %d, want 403", p, code)
				}
			})
		}
	}
	t.Run("tcp-relay/connect", func(t *testing.T) {
		for _, p := range []string{"127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "10.0.0.1"} {
			c := dialRaw(t, "tcp", addr, testUser, testPassword)
			if code, _ := c.allocate(6, false); code != 0 {
				t.Fatalf("TCP allocate: %d", code)
			}
			peer := netip.AddrPortFrom(netip.MustParseAddr(p), 80)
			if code := c.connect(peer); code != 403 {
				t.Errorf("Connect %s: got %d, want 403", p, code)
			}
			if code := c.createPermission(peer.Addr()); code != 403 {
				t.Errorf("CreatePermission on TCP allocation %s: got %d, want 403", p, code)
			}
		}
	})
	if got := counterValue(t, tr.Relay, "turnpike_relay_peers_denied_total", "reason", denyLoopback); got == 0 {
		t.Error("peers_denied_total{reason=loopback} did not count")
	}
}

// TestAllowListedPrivatePeer: a private (default-deny) peer is refused and
// works once its range is allow-listed by a reload. The echo peer sits on
// a private address of this host, so it is also a node address: until an
// allow entry names it exactly, the relay admits its address (another
// allocation could be there) but drops every packet to its port outside
// the relay range. A deny entry wins over both.
func TestAllowListedPrivatePeer(t *testing.T) {
	peerIP := localPrivateAddr(t)
	cfg := baseConfig(t, t.TempDir())
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	v6 := peerIP.Is6()
	// Another address of the same private /N-8, not on this host.
	neighbour := peerIP.Next()
	for slices.Contains(localAddrs(t), neighbour) {
		neighbour = neighbour.Next()
	}
	rangeOf := func(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()-8).Masked().String() }

	c := dialRaw(t, "udp", addr, testUser, testPassword)
	c.mustAllocate(v6)
	if code := c.createPermission(neighbour); code != 403 {
		t.Fatalf("private peer %s before allow: got %d, want 403", neighbour, code)
	}
	if code := c.createPermission(peerIP); code != 0 {
		t.Fatalf("node address %s: got %d, want success (its relay ports are peers)", peerIP, code)
	}
	c.readTimeout = ioTimeout / 20
	c.send(peer.addr, []byte("to a node port"))
	if d, err := c.receive(); err == nil {
		t.Fatalf("echo %q from node port %s before it was allow-listed", d.data, peer.addr)
	}
	c.readTimeout = 0

	cfg.PeerPolicy.Allow = []string{rangeOf(peerIP)}
	tr.writeFiles(t, cfg, nil)
	tr.Reload()
	if code := c.createPermission(neighbour); code != 0 {
		t.Fatalf("allow-listed peer %s: got %d, want success", neighbour, code)
	}
	cfg.PeerPolicy.Allow = append(cfg.PeerPolicy.Allow, netip.PrefixFrom(peerIP, peerIP.BitLen()).String())
	tr.writeFiles(t, cfg, nil)
	tr.Reload()
	c.roundTrip(peer.addr, 0, []byte("private but allowed"))

	cfg.PeerPolicy.Deny = []string{netip.PrefixFrom(peerIP, peerIP.BitLen()).String()}
	tr.writeFiles(t, cfg, nil)
	tr.Reload()
	if code := c.createPermission(peerIP); code != 403 {
		t.Fatalf("denied peer %s: got %d, want 403 (deny wins over allow)", peerIP, code)
	}
}

// TestQuotas: allocations per user and in total answer 486; permissions and
// channels per allocation are refused beyond their limits.
func TestQuotas(t *testing.T) {
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.Quotas = config.Quotas{AllocationsPerUser: 2, AllocationsTotal: 3, PermissionsPerAllocation: 2, ChannelsPerAllocation: 1}
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String(), "203.0.113.0/24"}
	creds := baseCredentials()
	creds.Users = append(creds.Users, config.User{Username: "bob", Key: keyHex("bob", "bob-password")})
	tr := startRelay(t, cfg, creds)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))

	a1 := dialRaw(t, "udp", addr, testUser, testPassword)
	a1.mustAllocate(false)
	dialRaw(t, "udp", addr, testUser, testPassword).mustAllocate(false)
	if code, _ := dialRaw(t, "udp", addr, testUser, testPassword).allocate(17, false); code != 486 {
		t.Fatalf("third allocation of alice: got %d, want 486", code)
	}
	dialRaw(t, "tcp", addr, "bob", "bob-password").mustAllocate(false)
	if code, _ := dialRaw(t, "udp", addr, "bob", "bob-password").allocate(17, false); code != 486 {
		t.Fatalf("fourth allocation in total: got %d, want 486", code)
	}

	if got := counterValue(t, tr.Relay, "turnpike_relay_allocations_active"); got != 3 {
		t.Errorf("allocations_active = %v, want 3", got)
	}

	peers := []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3")}
	for i, p := range peers {
		want := 0
		if i == 2 {
			want = 403
		}
		if code := a1.createPermission(p); code != want {
			t.Fatalf("permission %d: got %d, want %d", i+1, code, want)
		}
	}
	if code := a1.createPermission(peers[0]); code != 0 {
		t.Fatalf("refreshing an existing permission: got %d", code)
	}
	if code := a1.channelBind(0x4000, netip.AddrPortFrom(peers[0], 1)); code != 0 {
		t.Fatalf("first channel: %d", code)
	}
	if code := a1.channelBind(0x4000, netip.AddrPortFrom(peers[0], 1)); code != 0 {
		t.Fatalf("refreshing the channel: %d", code)
	}
	if code := a1.channelBind(0x4001, netip.AddrPortFrom(peers[1], 1)); code != 403 {
		t.Fatalf("second channel: got %d, want 403", code)
	}
	for _, q := range []string{quotaAllocationsPerUser, quotaAllocationsTotal, quotaPermissions, quotaChannels} {
		if counterValue(t, tr.Relay, "turnpike_relay_quota_rejections_total", "quota", q) == 0 {
			t.Errorf("quota_rejections_total{quota=%s} did not count", q)
		}
	}
}

func keyHex(user, password string) string {
	return fmt.Sprintf("%x", turn.GenerateAuthKey(user, testRealm, password))
}

// quietLoggers keeps pion's client quiet in test output.
func quietLoggers() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelError
	return f
}

// counterValue reads one series from the relay's registry.
func counterValue(t *testing.T, r *Relay, name string, labels ...string) float64 {
	t.Helper()
	families, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

var _ = strings.Contains

// TestTLSCertificateReloadAndMinVersion: a new certificate written over the
// files is served after a reload, without a restart; TLS 1.1 is refused.
func TestTLSCertificateReloadAndMinVersion(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir)
	tr := startRelay(t, cfg, baseCredentials())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.tlsPort))
	serial := func() string {
		t.Helper()
		// The test only looks at which certificate is served.
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	testutil.WriteSelfSignedCert(t, dir) // same file names, new key and serial
	tr.Reload()
	if after := serial(); after == before {
		t.Errorf("still serving certificate %s after the files changed", before)
	}
	old := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11} //nolint:gosec
	if c, err := tls.Dial("tcp", addr, old); err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
}
