package netlab_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/netlab"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// The lab of TestSTUNDiscoveryBehindNAT: a relay on a node behind a NAT
// that also forwards inbound traffic to it (1:1, as a cloud does for a VM
// with a public IP), and a public segment with a STUN server, a TURN client
// and a peer. 198.18.0.0/15 is the benchmarking range (RFC 2544) and plays
// the internet; nothing here is routed outside the namespaces.
//
//	node ns                 nat ns                         pub ns
//	turnpike relay  ──  10.77.1.1 | 198.18.0.1  ──  198.18.0.2: STUN server :3478,
//	10.77.1.2           MASQUERADE out, DNAT in         TURN client, peer
const (
	labNode     = "lab-node"
	nodeAddr    = "10.77.1.2"
	natInner    = "10.77.1.1"
	natOuter    = "198.18.0.1"
	natOuter2   = "198.18.0.11" // the NAT's address after it changes
	publicAddr  = "198.18.0.2"
	labRealm    = "lab.test"
	labUser     = "alice"
	labPassword = "alice-password"
	healthPort  = 9642
	metricsPort = 9641
)

// TestSTUNDiscoveryBehindNAT runs the built turnpike relay in the node
// namespace with STUN discovery on and no address for its node: it must
// discover the NAT's outer address, show it in /status and the address
// metric, and hand it to a TURN client on the public side as
// XOR-RELAYED-ADDRESS — an address that works: a peer on the public side
// reaches the client through it.
func TestSTUNDiscoveryBehindNAT(t *testing.T) {
	lab := netlab.New(t)
	node, nat, pub := lab.Namespace("node"), lab.Namespace("nat"), lab.Namespace("pub")
	lab.Link(node, nodeAddr+"/24", nat, natInner+"/24")
	_, natOut := lab.Link(pub, publicAddr+"/24", nat, natOuter+"/24")
	node.DefaultRoute(natInner)
	nat.EnableForwarding()
	nat.Masquerade(natOut)
	nat.DNAT(natOut, natOuter, nodeAddr)

	stunServer := netlab.StartSTUNServer(t, pub.ListenPacket("udp4", publicAddr+":3478"))
	bin := buildTurnpike(t)
	dir := writeRelayFiles(t, stunServer.Addr().String())
	relayCmd := startRelayIn(t, node, bin, dir, nodeAddr)

	// /status and /metrics, read from inside the node namespace.
	var status config.Status
	getJSON(t, node, "/status", &status)
	wantSource := "stun:" + stunServer.Addr().String()
	if strings.Join(status.ExternalAddresses, ",") != natOuter || status.ExternalAddressSource != wantSource {
		t.Errorf("/status: advertised %v from %q, want [%s] from %q", status.ExternalAddresses, status.ExternalAddressSource, natOuter, wantSource)
	}
	if status.STUN == nil || len(status.STUN.Discovered) != 1 || status.STUN.Discovered[0].Address != natOuter {
		t.Errorf("/status stun = %+v, want %s discovered", status.STUN, natOuter)
	}
	wantMetric := fmt.Sprintf(`turnpike_relay_external_address_info{address=%q,source=%q} 1`, natOuter, wantSource)
	if metrics := get(t, node, metricsPort, "/metrics"); !strings.Contains(metrics, wantMetric) {
		t.Errorf("/metrics lacks %s", wantMetric)
	}

	// A TURN client on the public side, through the NAT's outer address.
	relayConn := allocate(t, pub)
	relayed := relayConn.LocalAddr().(*net.UDPAddr)
	if relayed.IP.String() != natOuter {
		t.Fatalf("XOR-RELAYED-ADDRESS %s, want the NAT's outer address %s", relayed, natOuter)
	}
	peer := pub.ListenPacket("udp4", publicAddr+":0")
	exchange(t, relayConn, peer, natOuter)

	// The NAT's outer address changes (new flows leave from natOuter2) and
	// the relay is told to rediscover (SIGHUP; it would also on its own
	// within the interval). New allocations get the new address; the old
	// allocation keeps its address and its NAT mapping, and keeps relaying.
	nat.AddAddress(natOut, natOuter2+"/24")
	nat.Exec("iptables", "-t", "nat", "-F", "POSTROUTING")
	nat.SNAT(natOut, natOuter2)
	nat.DNAT(natOut, natOuter2, nodeAddr)
	if err := relayCmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, node, "the new NAT address to be advertised", func(s config.Status) bool {
		return strings.Join(s.ExternalAddresses, ",") == natOuter2
	})
	relayConn2 := allocate(t, pub)
	if ip := relayConn2.LocalAddr().(*net.UDPAddr).IP.String(); ip != natOuter2 {
		t.Fatalf("after the NAT changed: XOR-RELAYED-ADDRESS %s, want %s", relayConn2.LocalAddr(), natOuter2)
	}
	exchange(t, relayConn2, peer, natOuter2)
	exchange(t, relayConn, peer, natOuter)
}

// waitStatus polls the relay's /status from inside ns until cond holds.
func waitStatus(t *testing.T, ns *netlab.Namespace, what string, cond func(config.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a failure bound, not a timing
	for {
		var s config.Status
		getJSON(t, ns, "/status", &s)
		if cond(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; /status: %+v", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildTurnpike builds the turnpike binary.
func buildTurnpike(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "turnpike")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/turnpike-dev/turnpike")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// writeRelayFiles writes relay.yaml and credentials.yaml as the operator
// renders them for a node that relies on STUN: an entry with source STUN
// and no address.
func writeRelayFiles(t *testing.T, stunServer string) string {
	t.Helper()
	return writeRelayConfig(t, labRelayConfig(stunServer))
}

// labRelayConfig is the relay.yaml of the STUN lab's relay.
func labRelayConfig(stunServer string) *config.Relay {
	return &config.Relay{
		Version:        config.Version,
		Realm:          labRealm,
		Listeners:      []config.Listener{{Name: "udp", Protocol: config.UDP, Port: 3478}},
		RelayPortRange: config.PortRange{Min: 40000, Max: 40099},
		Addresses: config.Addresses{
			Nodes: map[string]config.NodeAddresses{labNode: {Source: "STUN"}},
			STUN:  &config.STUNDiscovery{Servers: []string{stunServer}},
		},
		// The lab's "internet" is the benchmarking block, which relays refuse
		// as peers by default (not globally reachable).
		PeerPolicy:       config.PeerPolicy{Allow: []string{"198.18.0.0/15"}},
		Internal:         config.Internal{Address: "127.0.0.1", MetricsPort: metricsPort, HealthPort: healthPort},
		DrainGracePeriod: config.Duration{Duration: time.Second},
		Log:              config.Log{Level: "debug", Format: "text"},
	}
}

// writeRelayConfig writes cfg and the lab user's credentials.yaml into a
// new directory.
func writeRelayConfig(t *testing.T, cfg *config.Relay) string {
	t.Helper()
	dir := t.TempDir()
	creds := &config.Credentials{
		Version: config.Version, Generation: 1,
		Users: []config.User{{Username: labUser, Key: hex.EncodeToString(turn.GenerateAuthKey(labUser, labRealm, labPassword))}},
	}
	for name, v := range map[string]any{config.RelayFile: cfg, config.CredentialsFile: creds} {
		b, err := config.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startRelayIn runs `turnpike relay` inside ns as a relay pod would run
// (NODE_NAME and HOST_IP, here hostIP, from the downward API) and waits
// until it is ready. It is stopped with SIGTERM when the test ends.
func startRelayIn(t *testing.T, ns *netlab.Namespace, bin, dir, hostIP string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a bound, not a timing
	cmd := ns.Command(ctx, bin, "relay", "--config", filepath.Join(dir, config.RelayFile), "--credentials", dir)
	cmd.Env = append(os.Environ(), "NODE_NAME="+labNode, "HOST_IP="+hostIP)
	logs := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		defer cancel()
		// ip netns exec execs the relay, so the signal reaches it.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("relay exited with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("relay did not stop on SIGTERM")
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("relay logs:\n%s", logs)
		}
	})

	client := ns.HTTPClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return cmd
			}
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("relay exited before it was ready: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay not ready after 30s (last error %v)\n%s", err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get fetches path from the relay's internal listener on port, from
// inside ns.
func get(t *testing.T, ns *netlab.Namespace, port int, path string) string {
	t.Helper()
	res, err := ns.HTTPClient().Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, res.StatusCode, err)
	}
	return string(body)
}

func getJSON(t *testing.T, ns *netlab.Namespace, path string, v any) {
	t.Helper()
	body := get(t, ns, healthPort, path)
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, body)
	}
}

// allocate makes a UDP allocation from the public namespace through the
// NAT's outer address.
func allocate(t *testing.T, pub *netlab.Namespace) net.PacketConn {
	t.Helper()
	server := net.JoinHostPort(natOuter, "3478")
	loggers := logging.NewDefaultLoggerFactory()
	loggers.DefaultLogLevel = logging.LogLevelError
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: pub.ListenPacket("udp4", publicAddr+":0"),
		Username: labUser, Password: labPassword, Realm: labRealm, LoggerFactory: loggers,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate through %s: %v", server, err)
	}
	// Registered after the client's cleanup, so it runs first: releasing
	// the allocation lets the relay's drain end at once.
	t.Cleanup(func() { _ = relayConn.Close() })
	return relayConn
}

// exchange sends a datagram from the client to the peer through the relay,
// checking that the peer sees it from wantFrom, then one from the peer to
// the advertised relayed address back to the client. The second only
// arrives if the advertised address really leads to this relay. UDP may
// drop a datagram, so each is retried a few times.
func exchange(t *testing.T, relayConn, peer net.PacketConn, wantFrom string) {
	t.Helper()
	buf := make([]byte, 1500)
	var from net.Addr
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Fatal("the peer received nothing through the relay")
		}
		// The first write also installs the permission for the peer.
		if _, err := relayConn.WriteTo([]byte("ping"), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, src, err := peer.ReadFrom(buf)
		if err == nil && string(buf[:n]) == "ping" {
			from = src
			break
		}
	}
	if ip := from.(*net.UDPAddr).IP.String(); ip != wantFrom {
		t.Errorf("the peer saw the relay at %s, want %s", from, wantFrom)
	}
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Fatalf("nothing sent to the relayed address %s reached the client", relayConn.LocalAddr())
		}
		if _, err := peer.WriteTo([]byte("pong"), relayConn.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := relayConn.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], []byte("pong")) {
			return
		}
	}
}
