package relay

import (
	"encoding/json"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// harnessNode is the NODE_NAME startRelay runs its relays with.
const harnessNode = "-"

// TestResolveAddresses is the precedence table, per family: this node's
// entry > STUN (while addresses.stun is set) > addresses.external > bind.
func TestResolveAddresses(t *testing.T) {
	env := environment{nodeName: "n1", hostIP: netip.MustParseAddr("10.0.0.5")}
	stunOn := &config.STUNDiscovery{Servers: []string{"stun.example.net:3478"}}
	found := [2]sourcedAddr{{netip.MustParseAddr("203.0.113.9"), "stun:stun.example.net:3478"}, {}}
	tests := []struct {
		name     string
		a        config.Addresses
		want4    string
		source4  string
		want6    string
		wantBind string
	}{
		{"HOST_IP binds and is advertised", config.Addresses{}, "10.0.0.5", "bind address", "", "10.0.0.5"},
		{"external beats bind", config.Addresses{External: []string{"198.51.100.1"}}, "198.51.100.1", "addresses.external", "", "10.0.0.5"},
		{"node entry beats external", config.Addresses{External: []string{"198.51.100.1"},
			Nodes: map[string]config.NodeAddresses{"n1": {External: []string{"198.51.100.2"}, Source: "ExternalIP"}, "n2": {External: []string{"198.51.100.3"}}}},
			"198.51.100.2", "addresses.nodes[n1] (ExternalIP)", "", "10.0.0.5"},
		{"STUN beats external", config.Addresses{External: []string{"198.51.100.1"}, STUN: stunOn,
			Nodes: map[string]config.NodeAddresses{"n1": {Source: "STUN"}}}, "203.0.113.9", "stun:stun.example.net:3478", "", "10.0.0.5"},
		{"node entry beats STUN", config.Addresses{STUN: stunOn,
			Nodes: map[string]config.NodeAddresses{"n1": {External: []string{"198.51.100.2"}}}}, "198.51.100.2", "addresses.nodes[n1]", "", "10.0.0.5"},
		{"STUN result ignored once stun is unset", config.Addresses{External: []string{"198.51.100.1"}}, "198.51.100.1", "addresses.external", "", "10.0.0.5"},
		{"per family: v6 from external, v4 from the node", config.Addresses{Bind: []string{"10.0.0.5", "fd00::5"},
			External: []string{"2001:db8::1"}, Nodes: map[string]config.NodeAddresses{"n1": {External: []string{"198.51.100.2"}}}},
			"198.51.100.2", "addresses.nodes[n1]", "2001:db8::1", "10.0.0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveAddresses(tt.a, env, found)
			if err != nil {
				t.Fatal(err)
			}
			v4, v6 := got.advertised[ipv4], got.advertised[ipv6]
			if v4.addr.String() != tt.want4 || v4.source != tt.source4 {
				t.Errorf("IPv4: %s from %q, want %s from %q", v4.addr, v4.source, tt.want4, tt.source4)
			}
			if (tt.want6 == "" && v6.addr.IsValid()) || (tt.want6 != "" && v6.addr.String() != tt.want6) {
				t.Errorf("IPv6: %s, want %q", v6.addr, tt.want6)
			}
			if bind, _, _ := got.forNetwork("udp4"); bind.String() != tt.wantBind {
				t.Errorf("bind %s, want %s", bind, tt.wantBind)
			}
		})
	}
}

// TestSTUNTargets: discovery asks only for families this node's entry does
// not cover, from the bind address of that family.
func TestSTUNTargets(t *testing.T) {
	env := environment{nodeName: "n1"}
	a := config.Addresses{Bind: []string{"10.0.0.5", "fd00::5"}, STUN: &config.STUNDiscovery{Servers: []string{"s:1"}}}
	got, err := stunTargets(a, env)
	if err != nil || len(got) != 2 || got[0].String() != "10.0.0.5" || got[1].String() != "fd00::5" {
		t.Fatalf("no node entry: targets %v (%v), want both bind addresses", got, err)
	}
	a.Nodes = map[string]config.NodeAddresses{"n1": {External: []string{"198.51.100.2"}}}
	if got, err = stunTargets(a, env); err != nil || len(got) != 1 || got[0].String() != "fd00::5" {
		t.Fatalf("node entry with IPv4: targets %v (%v), want only fd00::5", got, err)
	}
}

// TestAddressMapReload: the relay advertises its own node's entry of the
// per-node map; a rewritten map applies to new allocations on reload,
// while an allocation made before keeps relaying.
func TestAddressMapReload(t *testing.T) {
	peerIP := localAddr(t, false, false)
	cfg := baseConfig(t, t.TempDir())
	cfg.PeerPolicy.Allow = []string{netip.PrefixFrom(peerIP, 32).String()}
	// IPv4 only: the bind address would otherwise answer for IPv6.
	cfg.Addresses.Bind = []string{"127.0.0.1"}
	cfg.Addresses.External = []string{"192.0.2.1"}
	cfg.Addresses.Nodes = map[string]config.NodeAddresses{
		harnessNode:  {External: []string{"198.51.100.7"}, Source: "ExternalIP"},
		"other-node": {External: []string{"198.51.100.99"}},
	}
	tr := startRelay(t, cfg, baseCredentials())
	peer := startEchoPeer(t, peerIP)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))

	old := dialRaw(t, "udp", addr, testUser, testPassword)
	if got := old.mustAllocate(false).Addr().String(); got != "198.51.100.7" {
		t.Fatalf("XOR-RELAYED-ADDRESS %s, want this node's entry 198.51.100.7", got)
	}
	if code := old.createPermission(peerIP); code != 0 {
		t.Fatalf("CreatePermission: %d", code)
	}
	old.roundTrip(peer.addr, 0, []byte("before the reload"))
	checkAdvertised(t, tr, "198.51.100.7", "addresses.nodes[-] (ExternalIP)")

	for _, step := range []struct {
		name   string
		nodes  map[string]config.NodeAddresses
		want   string
		source string
	}{
		{"entry changed", map[string]config.NodeAddresses{harnessNode: {External: []string{"198.51.100.8"}, Source: "annotation"}}, "198.51.100.8", "addresses.nodes[-] (annotation)"},
		{"entry removed", map[string]config.NodeAddresses{"other-node": {External: []string{"198.51.100.99"}}}, "192.0.2.1", "addresses.external"},
	} {
		next := *cfg
		next.Addresses.Nodes = step.nodes
		tr.writeFiles(t, &next, nil)
		tr.Reload()
		if got := dialRaw(t, "udp", addr, testUser, testPassword).mustAllocate(false).Addr().String(); got != step.want {
			t.Errorf("%s: new allocation got %s, want %s", step.name, got, step.want)
		}
		checkAdvertised(t, tr, step.want, step.source)
		old.roundTrip(peer.addr, 0, []byte("old allocation after: "+step.name))
	}
}

// checkAdvertised compares /status and the address info metric with the
// expected IPv4 address and source.
func checkAdvertised(t *testing.T, tr *testRelay, want, source string) {
	t.Helper()
	st := relayStatus(t, tr)
	if len(st.ExternalAddresses) != 1 || st.ExternalAddresses[0] != want || st.ExternalAddressSource != source {
		t.Errorf("/status: %v from %q, want [%s] from %q", st.ExternalAddresses, st.ExternalAddressSource, want, source)
	}
	if v := counterValue(t, tr.Relay, "turnpike_relay_external_address_info", "address", want, "source", source); v != 1 {
		t.Errorf("turnpike_relay_external_address_info{address=%q,source=%q} = %v, want 1", want, source, v)
	}
}

// relayStatus is the relay's /status, served in-process.
func relayStatus(t *testing.T, tr *testRelay) config.Status {
	t.Helper()
	rec := httptest.NewRecorder()
	tr.serveStatus(rec, httptest.NewRequest("GET", "/status", nil))
	var st config.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, rec.Body)
	}
	return st
}

// TestNodeFileReload: with addresses.nodeFile, the relay advertises the
// node entry in that file (a projected pod annotation) instead of
// addresses.nodes, and follows it on reload without a relay.yaml change.
func TestNodeFileReload(t *testing.T) {
	cfg := baseConfig(t, t.TempDir())
	cfg.Addresses.Bind = []string{"127.0.0.1"} // IPv4 only
	cfg.Addresses.External = []string{"192.0.2.1"}
	cfg.Addresses.Nodes = map[string]config.NodeAddresses{harnessNode: {External: []string{"198.51.100.99"}}}
	cfg.Addresses.NodeFile = filepath.Join(t.TempDir(), "addresses.json")
	writeNodeFile := func(content string) {
		t.Helper()
		// As the kubelet does: a new file swapped in, never a partial write.
		tmp := cfg.Addresses.NodeFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg.Addresses.NodeFile); err != nil {
			t.Fatal(err)
		}
	}
	writeNodeFile(`{"external":["198.51.100.7"],"source":"ExternalIP"}`)
	tr := startRelay(t, cfg, baseCredentials())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.port))
	allocated := func() string {
		return dialRaw(t, "udp", addr, testUser, testPassword).mustAllocate(false).Addr().String()
	}
	if got := allocated(); got != "198.51.100.7" {
		t.Fatalf("XOR-RELAYED-ADDRESS %s, want the node file's 198.51.100.7 (not addresses.nodes)", got)
	}
	checkAdvertised(t, tr, "198.51.100.7", "addresses.nodeFile (ExternalIP)")

	for _, step := range []struct{ name, content, want, source string }{
		{"entry changed", `{"external":["198.51.100.8"],"source":"Annotation"}`, "198.51.100.8", "addresses.nodeFile (Annotation)"},
		{"not written yet", "", "192.0.2.1", "addresses.external"},
		{"broken: the last good entry stays", `{"external":["not an address"]}`, "192.0.2.1", "addresses.external"},
	} {
		writeNodeFile(step.content)
		tr.Reload()
		if got := allocated(); got != step.want {
			t.Errorf("%s: new allocation got %s, want %s", step.name, got, step.want)
		}
		checkAdvertised(t, tr, step.want, step.source)
	}
}
