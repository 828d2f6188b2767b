package netlab_test

import (
	"cmp"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/netlab"
)

// The lab of TestNATBehaviorDiscovery: a client behind a NAT of each kind
// RFC 4787 names, and on the "internet" side a server namespace with two
// addresses running a turnpike relay with behaviour discovery and coturn
// with the same two addresses, for comparison.
//
//	client ns              nat ns                              server ns
//	10.78.1.2  ──  10.78.1.1 | 198.18.1.1 (+198.18.1.11)  ──  198.18.1.2, 198.18.1.3
//	                 one NAT kind at a time (iptables)         turnpike relay :3478, alternate :3479
//	                                                            coturn :3480, alternate :3481
const (
	natClient     = "10.78.1.2"
	natLabInner   = "10.78.1.1"
	natLabOuter   = "198.18.1.1"
	natLabOuter2  = "198.18.1.11" // the second outer address of the address-dependent mapping
	serverA1      = "198.18.1.2"
	serverA2      = "198.18.1.3"
	relaySTUNPort = 3478
	relayAltPort  = 3479
	coturnPort    = 3480
	coturnAltPort = 3481
)

// natKind is one NAT the lab builds, and what the RFC 5780 tests must find.
type natKind struct {
	name               string
	mapping, filtering string // as `turnpike probe --nat` prints them
	coturn             string // turnutils_natdiscovery's words for mapping and filtering
	// natdiscoveryOnTurnpike, when set, is what turnutils_natdiscovery
	// concludes against the turnpike relay where it differs from coturn
	// (see natdiscoveryTestIII).
	natdiscoveryOnTurnpike string
	rules                  func(nat *netlab.Namespace, outIf string)
}

// natdiscoveryTestIII: turnutils_natdiscovery (coturn 4.6) sends its
// mapping test III to the OTHER-ADDRESS of test II's answer, not of test
// I's. test II went to the alternate address and primary port (A2:P1),
// where RFC 5780's table 1 makes OTHER-ADDRESS the primary address and
// alternate port (A1:P2), which the turnpike relay sends; coturn sends
// A2:P2 there instead. So behind an address-dependent mapping, test III
// reaches A1 again, gets a mapping unlike test II's, and the client
// reports an address-and-port-dependent mapping from turnpike, while the
// two deviations cancel out against coturn. Clients that follow the RFC
// (turnpike probe --nat, pion's stun-nat-behaviour) use test I's
// OTHER-ADDRESS and get the same verdict from both.
const natdiscoveryTestIII = "Address and Port Dependent Mapping|Address and Port Dependent Filtering"

// natKinds are the NATs Linux's iptables can build here. Linux's source
// NAT keeps a flow's source port whenever it is free, so a plain SNAT or
// MASQUERADE maps endpoint-independently; conntrack lets in only answers
// from the exact address and port a flow went to, which is
// address-and-port-dependent filtering. The rest is added on top:
//
//   - endpoint-independent filtering: DNAT of every UDP packet arriving at
//     the outer address to the client, the same port ("full cone");
//   - address-dependent filtering: the same DNAT, only for senders the
//     inside has sent to (iptables' recent list of destinations). The
//     list is the NAT's, not the mapping's: once any inside socket has
//     sent to an address, it may reach every mapping. The probe therefore
//     runs the filtering tests before it sends anything to the alternate
//     address, and the list is cleared between clients;
//   - address-dependent mapping: a different outer address per server
//     address (SNAT by destination), the source port kept;
//   - address-and-port-dependent mapping: MASQUERADE --random-fully, a
//     random outer port for every new flow.
var natKinds = []natKind{
	{"full cone", "endpoint-independent", "endpoint-independent", "Endpoint Independent Mapping|Endpoint Independent Filtering", "",
		func(nat *netlab.Namespace, out string) {
			nat.SNAT(out, natLabOuter)
			nat.Exec("iptables", "-t", "nat", "-A", "PREROUTING", "-i", out, "-p", "udp", "-d", natLabOuter, "-j", "DNAT", "--to-destination", natClient)
		}},
	{"restricted cone", "endpoint-independent", "address-dependent", "Endpoint Independent Mapping|Address Dependent Filtering", "",
		func(nat *netlab.Namespace, out string) {
			nat.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-m", "recent", "--name", "sent", "--rdest", "--set")
			nat.SNAT(out, natLabOuter)
			nat.Exec("iptables", "-t", "nat", "-A", "PREROUTING", "-i", out, "-p", "udp", "-d", natLabOuter,
				"-m", "recent", "--name", "sent", "--rsource", "--rcheck", "-j", "DNAT", "--to-destination", natClient)
		}},
	{"port-restricted cone", "endpoint-independent", "address-and-port-dependent", "Endpoint Independent Mapping|Address and Port Dependent Filtering", "",
		func(nat *netlab.Namespace, out string) { nat.Masquerade(out) }},
	{"address-dependent mapping", "address-dependent", "address-and-port-dependent", "Address Dependent Mapping|Address and Port Dependent Filtering",
		natdiscoveryTestIII, func(nat *netlab.Namespace, out string) {
			nat.AddAddress(out, natLabOuter2+"/24")
			nat.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-d", serverA1, "-j", "SNAT", "--to-source", natLabOuter)
			nat.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-d", serverA2, "-j", "SNAT", "--to-source", natLabOuter2)
		}},
	{"symmetric", "address-and-port-dependent", "address-and-port-dependent", "Address and Port Dependent Mapping|Address and Port Dependent Filtering", "",
		func(nat *netlab.Namespace, out string) {
			nat.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-j", "MASQUERADE", "--random-fully")
		}},
}

// TestNATBehaviorDiscovery builds each NAT kind in turn between a client
// and a server namespace, and checks that `turnpike probe --nat` against
// the turnpike relay names its mapping and filtering, that it says the
// same against coturn, and that coturn's own client, turnutils_natdiscovery,
// gets the same verdict from the turnpike relay as from coturn, but where
// its own deviation from the RFC shows (natdiscoveryTestIII).
func TestNATBehaviorDiscovery(t *testing.T) {
	lab := netlab.New(t)
	natdiscovery, err := exec.LookPath("turnutils_natdiscovery")
	netlab.Require(t, "turnutils_natdiscovery (Debian package coturn)", err == nil)
	turnserver, err := exec.LookPath("turnserver")
	netlab.Require(t, "turnserver (Debian package coturn)", err == nil)

	client, nat, server := lab.Namespace("client"), lab.Namespace("nat"), lab.Namespace("srv")
	lab.Link(client, natClient+"/24", nat, natLabInner+"/24")
	srvIf, natOut := lab.Link(server, serverA1+"/24", nat, natLabOuter+"/24")
	server.AddAddress(srvIf, serverA2+"/24")
	client.DefaultRoute(natLabInner)
	nat.EnableForwarding()

	bin := buildTurnpike(t)
	pionClient := buildPionNATBehaviour(t)
	startRelayIn(t, server, bin, writeRelayConfig(t, behaviorRelayConfig()), serverA1)
	startCoturnIn(t, server, turnserver)

	for _, kind := range natKinds {
		t.Run(kind.name, func(t *testing.T) {
			resetNAT(nat, natOut)
			kind.rules(nat, natOut)
			for _, target := range []struct {
				name string
				port int
			}{{"turnpike", relaySTUNPort}, {"coturn", coturnPort}} {
				resetNATState(nat)
				mapping, filtering := probeNAT(t, client, bin, target.port)
				if mapping != kind.mapping || filtering != kind.filtering {
					t.Errorf("turnpike probe --nat against %s: %s mapping, %s filtering; want %s, %s",
						target.name, mapping, filtering, kind.mapping, kind.filtering)
				}
			}
			// pion's client runs the mapping tests first, so behind the
			// lab's address-dependent filter (a list per NAT, see natKinds)
			// it may see endpoint-independent filtering; what must hold is
			// that it hears the same from both servers.
			resetNATState(nat)
			fromTurnpike := pionNATBehaviour(t, client, pionClient, relaySTUNPort)
			resetNATState(nat)
			if fromCoturn := pionNATBehaviour(t, client, pionClient, coturnPort); fromTurnpike != fromCoturn {
				t.Errorf("pion's stun-nat-behaviour: %q from turnpike, %q from coturn", fromTurnpike, fromCoturn)
			}
			for _, target := range []struct {
				name string
				port int
				want string
			}{{"turnpike", relaySTUNPort, cmp.Or(kind.natdiscoveryOnTurnpike, kind.coturn)}, {"coturn", coturnPort, kind.coturn}} {
				resetNATState(nat)
				want := strings.Split(target.want, "|")
				got := natDiscovery(t, client, natdiscovery, target.port)
				if got[0] != want[0] || got[1] != want[1] {
					t.Errorf("turnutils_natdiscovery against %s: %q; want %q", target.name, got, want)
				}
			}
		})
	}
}

// behaviorRelayConfig is a relay on serverA1 with behaviour discovery and
// serverA2 as its alternate address.
func behaviorRelayConfig() *config.Relay {
	cfg := labRelayConfig("")
	cfg.Listeners = []config.Listener{{Name: "udp", Protocol: config.UDP, Port: relaySTUNPort}}
	cfg.Addresses = config.Addresses{Nodes: map[string]config.NodeAddresses{labNode: {External: []string{serverA1}}}}
	cfg.STUN.BehaviorDiscovery = &config.BehaviorDiscovery{AlternatePort: relayAltPort, AlternateAddresses: []string{serverA2}}
	return cfg
}

// startCoturnIn runs coturn in ns on both server addresses, which turns
// its behaviour discovery on, until the test ends.
func startCoturnIn(t *testing.T, ns *netlab.Namespace, bin string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, bin, "-n", "--listening-ip="+serverA1, "--listening-ip="+serverA2, "--relay-ip="+serverA1,
		"--listening-port="+strconv.Itoa(coturnPort), "--alt-listening-port="+strconv.Itoa(coturnAltPort),
		"--min-port=41000", "--max-port=41099", "--no-tls", "--no-dtls", "--no-cli", "--no-stdout-log",
		"--log-file="+filepath.Join(dir, "turnserver.log"), "--pidfile="+filepath.Join(dir, "turnserver.pid"))
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			logs, _ := os.ReadFile(filepath.Join(dir, "turnserver.log"))
			t.Logf("turnserver log:\n%s", logs)
		}
	})
	deadline := time.Now().Add(20 * time.Second) // a failure bound, not a timing
	for {
		c, err := ns.DialContext(ctx, "tcp", serverA1+":"+strconv.Itoa(coturnPort))
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("coturn does not listen on %s:%d: %v", serverA1, coturnPort, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// resetNAT removes the previous NAT kind: its rules, its connections and
// the extra outer address.
func resetNAT(nat *netlab.Namespace, outIf string) {
	nat.Exec("iptables", "-t", "nat", "-F")
	// Absent but for the address-dependent mapping: the error is expected.
	_, _ = nat.Command(context.Background(), "ip", "addr", "del", natLabOuter2+"/24", "dev", outIf).CombinedOutput()
	resetNATState(nat)
}

// resetNATState clears the recent list of the address-dependent
// filtering NAT, so each client meets a NAT that has seen no destination.
// Flows in conntrack stay: every client uses new random ports.
func resetNATState(nat *netlab.Namespace) {
	nat.Exec("sh", "-c", "if [ -e /proc/net/xt_recent/sent ]; then echo / > /proc/net/xt_recent/sent; fi")
}

var probeLine = regexp.MustCompile(`(?m)^(mapping|filtering) +([a-z-]+) (mapping|filtering)`)

// probeNAT runs `turnpike probe --nat` in the client namespace against
// the server's primary address on port, and returns the behaviours it
// names.
func probeNAT(t *testing.T, client *netlab.Namespace, bin string, port int) (mapping, filtering string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := client.Command(ctx, bin, "probe", "--nat", "stun:"+serverA1+":"+strconv.Itoa(port), "--timeout", "1s").CombinedOutput()
	if err != nil {
		t.Fatalf("turnpike probe --nat: %v\n%s", err, out)
	}
	for _, m := range probeLine.FindAllStringSubmatch(string(out), -1) {
		if m[1] == "mapping" {
			mapping = m[2]
		} else {
			filtering = m[2]
		}
	}
	t.Logf("turnpike probe --nat against port %d:\n%s", port, out)
	return mapping, filtering
}

var natDiscoveryVerdict = regexp.MustCompile(`NAT with (.*) (Mapping|Filtering)!`)

// natDiscovery runs coturn's client in the client namespace, the filtering
// tests first (see natKinds), and returns its mapping and filtering
// verdicts in its own words.
func natDiscovery(t *testing.T, client *netlab.Namespace, bin string, port int) [2]string {
	t.Helper()
	filtering := runNATDiscovery(t, client, bin, "-f", port)
	mapping := runNATDiscovery(t, client, bin, "-m", port)
	return [2]string{mapping, filtering}
}

// runNATDiscovery runs turnutils_natdiscovery with one mode (-m or -f)
// and returns its verdict, e.g. "Endpoint Independent Mapping".
func runNATDiscovery(t *testing.T, client *netlab.Namespace, bin, mode string, port int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := client.Command(ctx, bin, mode, "-p", strconv.Itoa(port), serverA1).CombinedOutput()
	m := natDiscoveryVerdict.FindStringSubmatch(string(out))
	if err != nil || m == nil {
		t.Fatalf("turnutils_natdiscovery %s against port %d: %v, no verdict in\n%s", mode, port, err, out)
	}
	return m[1] + " " + m[2]
}

// buildPionNATBehaviour builds pion/stun's RFC 5780 client,
// cmd/stun-nat-behaviour, from the module cache (pion/stun is a
// dependency): a third client that follows the RFC.
func buildPionNATBehaviour(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "stun-nat-behaviour")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/pion/stun/v4/cmd/stun-nat-behaviour")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build stun-nat-behaviour: %v\n%s", err, out)
	}
	return bin
}

var pionVerdict = regexp.MustCompile(`=> NAT (mapping|filtering) behavior: ([a-z -()]+)`)

// pionNATBehaviour runs pion's client in the client namespace and returns
// its two verdicts, e.g. "mapping: endpoint independent; filtering:
// address dependent".
func pionNATBehaviour(t *testing.T, client *netlab.Namespace, bin string, port int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := client.Command(ctx, bin, "-server", serverA1+":"+strconv.Itoa(port), "-timeout", "1").CombinedOutput()
	found := pionVerdict.FindAllStringSubmatch(string(out), -1)
	if err != nil || len(found) != 2 {
		t.Fatalf("stun-nat-behaviour against port %d: %v, want two verdicts in\n%s", port, err, out)
	}
	verdict := found[0][1] + ": " + strings.TrimSpace(found[0][2]) + "; " + found[1][1] + ": " + strings.TrimSpace(found[1][2])
	t.Logf("stun-nat-behaviour against port %d: %s", port, verdict)
	return verdict
}
