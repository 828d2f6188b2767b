package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// ts builds an in-memory TurnServer with the API server's defaults applied.
func TestSelectsNode(t *testing.T) {
	noSchedule := func(key string) []corev1.Taint {
		return []corev1.Taint{{Key: key, Effect: corev1.TaintEffectNoSchedule}}
	}
	tests := []struct {
		name      string
		placement turnpikev1.Placement
		node      corev1.Node
		want      bool
	}{
		{"no placement selects every node", turnpikev1.Placement{}, rendertest.Node("a", nil, nil), true},
		{"selector matches", turnpikev1.Placement{NodeSelector: map[string]string{"r": "1"}}, rendertest.Node("a", map[string]string{"r": "1"}, nil), true},
		{"selector misses", turnpikev1.Placement{NodeSelector: map[string]string{"r": "1"}}, rendertest.Node("a", map[string]string{"r": "2"}, nil), false},
		{"untolerated taint", turnpikev1.Placement{}, rendertest.Node("a", nil, noSchedule("dedicated")), false},
		{"tolerated taint", turnpikev1.Placement{Tolerations: []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}},
			rendertest.Node("a", nil, noSchedule("dedicated")), true},
		{"PreferNoSchedule does not block", turnpikev1.Placement{},
			rendertest.Node("a", nil, []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectPreferNoSchedule}}), true},
		{"memory pressure is tolerated by every daemon pod", turnpikev1.Placement{}, rendertest.Node("a", nil, noSchedule(corev1.TaintNodeMemoryPressure)), true},
		{"cordoned node keeps its relay", turnpikev1.Placement{}, rendertest.Node("a", nil, noSchedule(corev1.TaintNodeUnschedulable)), true},
		{"not-ready node gets no new relay", turnpikev1.Placement{}, rendertest.Node("a", nil, noSchedule(corev1.TaintNodeNotReady)), false},
		{"required affinity", turnpikev1.Placement{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"b"}}},
			}}},
		}}}, rendertest.Node("a", map[string]string{"zone": "a"}, nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) { ts.Spec.Placement = tt.placement })
			if got := SelectsNode(ts, &tt.node); got != tt.want {
				t.Fatalf("SelectsNode = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResolveNodeAddresses(t *testing.T) {
	ext := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: a} }
	in := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a} }
	annotated := func(v string, addrs ...corev1.NodeAddress) corev1.Node {
		n := rendertest.Node("n", nil, nil, addrs...)
		n.Annotations = map[string]string{turnpikev1.AnnotationExternalIP: v}
		return n
	}
	spec := []turnpikev1.NodeExternalAddress{{NodeName: "n", Addresses: []turnpikev1.IPAddress{"192.0.2.1"}}}
	tests := []struct {
		name   string
		spec   []turnpikev1.NodeExternalAddress
		node   corev1.Node
		want   string
		source turnpikev1.AddressSource
		public bool
	}{
		{"spec wins", spec, annotated("198.51.100.1", ext("203.0.113.1")), "192.0.2.1", turnpikev1.AddressFromSpec, true},
		{"spec for another node is ignored", []turnpikev1.NodeExternalAddress{{NodeName: "m", Addresses: []turnpikev1.IPAddress{"192.0.2.1"}}},
			rendertest.Node("n", nil, nil, ext("203.0.113.1")), "203.0.113.1", turnpikev1.AddressFromExternalIP, true},
		{"annotation over ExternalIP", nil, annotated("198.51.100.1", ext("203.0.113.1")), "198.51.100.1", turnpikev1.AddressFromAnnotation, true},
		{"annotation dual-stack, IPv4 first", nil, annotated(" 2001:db8::1 ,198.51.100.1"), "198.51.100.1 2001:db8::1", turnpikev1.AddressFromAnnotation, true},
		{"garbage annotation falls through", nil, annotated("not-an-ip", ext("203.0.113.1")), "203.0.113.1", turnpikev1.AddressFromExternalIP, true},
		{"one address per family", nil, rendertest.Node("n", nil, nil, ext("203.0.113.1"), ext("203.0.113.2"), ext("2001:db8::5")),
			"203.0.113.1 2001:db8::5", turnpikev1.AddressFromExternalIP, true},
		{"InternalIP is not public", nil, rendertest.Node("n", nil, nil, in("10.0.0.1")), "10.0.0.1", turnpikev1.AddressFromInternalIP, false},
		{"no address at all", nil, rendertest.Node("n", nil, nil), "", turnpikev1.AddressFromInternalIP, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) { ts.Spec.ExternalAddresses = tt.spec })
			got := ResolveNodeAddresses(ts, &tt.node)
			if s := addrString(got.Addresses); s != tt.want || got.Source != tt.source || got.Public != tt.public {
				t.Fatalf("got %s %s public=%v, want %s %s public=%v", s, got.Source, got.Public, tt.want, tt.source, tt.public)
			}
		})
	}
}

func addrString(addrs []netip.Addr) string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}

func TestFindPortConflict(t *testing.T) {
	at := func(sec int) func(*turnpikev1.TurnServer) {
		return func(ts *turnpikev1.TurnServer) { ts.CreationTimestamp = metav1.NewTime(time.Unix(int64(1000+sec), 0)) }
	}
	on := func(label string) func(*turnpikev1.TurnServer) {
		return func(ts *turnpikev1.TurnServer) { ts.Spec.Placement.NodeSelector = map[string]string{"pool": label} }
	}
	elsewhere := func(ts *turnpikev1.TurnServer) {
		ts.Spec.Listeners[0].Port = 3500
		ts.Spec.MetricsPort, ts.Spec.HealthPort = 9700, 9701
		ts.Spec.RelayPortRange = turnpikev1.PortRange{Min: 30000, Max: 30999}
	}
	a, b := rendertest.Node("a", map[string]string{"pool": "a"}, nil), rendertest.Node("b", map[string]string{"pool": "b"}, nil)
	nodes := []*corev1.Node{&a, &b}
	tests := []struct {
		name   string
		ts     *turnpikev1.TurnServer
		others []*turnpikev1.TurnServer
		want   string // the winner's name and what collides, or ""
	}{
		{"alone", rendertest.TurnServer("x", at(1)), nil, ""},
		{"newer with the same ports loses", rendertest.TurnServer("x", at(2)), []*turnpikev1.TurnServer{rendertest.TurnServer("old", at(1))}, "old listener udp"},
		{"older with the same ports wins", rendertest.TurnServer("x", at(1)), []*turnpikev1.TurnServer{rendertest.TurnServer("new", at(2))}, ""},
		{"same second: name decides", rendertest.TurnServer("b", at(1)), []*turnpikev1.TurnServer{rendertest.TurnServer("a", at(1))}, "a listener udp"},
		{"different nodes never conflict", rendertest.TurnServer("x", at(2), on("a")), []*turnpikev1.TurnServer{rendertest.TurnServer("old", at(1), on("b"))}, ""},
		{"disjoint ports never conflict", rendertest.TurnServer("x", at(2), elsewhere), []*turnpikev1.TurnServer{rendertest.TurnServer("old", at(1))}, ""},
		{"listener inside the other's relay range", rendertest.TurnServer("x", at(2), elsewhere, func(ts *turnpikev1.TurnServer) { ts.Spec.Listeners[0].Port = 50000 }),
			[]*turnpikev1.TurnServer{rendertest.TurnServer("old", at(1))}, "old relay port range"},
		{"TCP listener does not collide with a UDP relay range", rendertest.TurnServer("x", at(2), elsewhere, func(ts *turnpikev1.TurnServer) {
			ts.Spec.Listeners[0] = turnpikev1.Listener{Name: "tcp", Protocol: turnpikev1.ProtocolTCP, Port: 50000}
		}), []*turnpikev1.TurnServer{rendertest.TurnServer("old", at(1))}, ""},
		{"metrics port alone collides", rendertest.TurnServer("x", at(2), elsewhere, func(ts *turnpikev1.TurnServer) { ts.Spec.MetricsPort = 9641 }),
			[]*turnpikev1.TurnServer{rendertest.TurnServer("old", at(1))}, "old metrics port"},
		{"a loser does not block a third", rendertest.TurnServer("x", at(3), on("b")), []*turnpikev1.TurnServer{
			rendertest.TurnServer("oldest", at(1), on("a"), elsewhere),
			rendertest.TurnServer("middle", at(2), elsewhere), // loses to oldest on node a
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var all []turnpikev1.TurnServer
			for _, o := range tt.others {
				all = append(all, *o)
			}
			all = append(all, *tt.ts)
			c := FindPortConflict(tt.ts, all, nodes)
			got := ""
			if c != nil {
				got = c.other.Name + " " + c.their.what
			}
			if got != tt.want {
				t.Fatalf("conflict %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDesiredDaemonSet(t *testing.T) {
	tls := func(ts *turnpikev1.TurnServer) {
		ts.Spec.Listeners = append(ts.Spec.Listeners, turnpikev1.Listener{
			Name: "turns", Protocol: turnpikev1.ProtocolDTLS, Port: 443, TLSSecretRef: &turnpikev1.LocalObjectReference{Name: "cert"}})
	}
	fastPathDisabled := func(ts *turnpikev1.TurnServer) { ts.Spec.Relay.FastPath.Mode = turnpikev1.FastPathDisabled }
	tests := []struct {
		name  string
		ts    *turnpikev1.TurnServer
		check func(*testing.T, *appsv1.DaemonSet)
	}{
		{"unprivileged ports need no capability", rendertest.TurnServer("ts"), func(t *testing.T, ds *appsv1.DaemonSet) {
			if add := ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add; len(add) != 0 {
				t.Errorf("capabilities added: %v", add)
			}
		}},
		{"port 443 adds NET_BIND_SERVICE only, as root", rendertest.TurnServer("ts", tls), func(t *testing.T, ds *appsv1.DaemonSet) {
			sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
			if !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_BIND_SERVICE"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("capabilities %+v", sc.Capabilities)
			}
			// A non-root process would not have the capability in effect.
			if sc.RunAsNonRoot == nil || *sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
				t.Errorf("runAsNonRoot %v runAsUser %v, want false and 0", sc.RunAsNonRoot, sc.RunAsUser)
			}
			// The agent serves the relay's user, root here.
			if cmd := ds.Spec.Template.Spec.Containers[1].Command; !slices.Equal(cmd[len(cmd)-2:], []string{"--relay-uid", "0"}) {
				t.Errorf("fastpath command %q, want --relay-uid 0", cmd)
			}
		}},
		{"the fast path (Auto by default) leaves the relay non-root with no capability", rendertest.TurnServer("ts"), func(t *testing.T, ds *appsv1.DaemonSet) {
			relay := ds.Spec.Template.Spec.Containers[0]
			sc := relay.SecurityContext
			if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser != nil || len(sc.Capabilities.Add) != 0 ||
				!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("relay runAsNonRoot %v runAsUser %v capabilities %+v, want the pod's UID 65532 and none", sc.RunAsNonRoot, sc.RunAsUser, sc.Capabilities)
			}
			if cmd := relay.Command; !slices.Equal(cmd[len(cmd)-4:], []string{"--fast-path", "Auto", "--fast-path-socket", "/run/turnpike/fastpath.sock"}) {
				t.Errorf("relay command %q, want the fast-path flags", cmd)
			}
			if !slices.ContainsFunc(relay.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == "fastpath" && m.MountPath == "/run/turnpike" && m.ReadOnly
			}) {
				t.Errorf("relay mounts %+v, want the fastpath emptyDir", relay.VolumeMounts)
			}
		}},
		{"the fastpath container holds BPF, NET_ADMIN and PERFMON only, and no credentials or port", rendertest.TurnServer("ts"), func(t *testing.T, ds *appsv1.DaemonSet) {
			spec := ds.Spec.Template.Spec
			if len(spec.Containers) != 2 || spec.Containers[1].Name != "fastpath" {
				t.Fatalf("containers %d, want relay and fastpath", len(spec.Containers))
			}
			fp := spec.Containers[1]
			want := []string{"/turnpike", "fastpath", "--config", "/etc/turnpike/config/relay.yaml", "--socket", "/run/turnpike/fastpath.sock", "--relay-uid", "65532"}
			if !slices.Equal(fp.Command, want) || fp.Image != spec.Containers[0].Image {
				t.Errorf("fastpath %q image %q, want %q and the relay's image", fp.Command, fp.Image, want)
			}
			sc := fp.SecurityContext
			if sc.RunAsNonRoot == nil || *sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
				t.Errorf("runAsNonRoot %v runAsUser %v, want false and 0", sc.RunAsNonRoot, sc.RunAsUser)
			}
			if !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("capabilities %+v", sc.Capabilities)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("readOnlyRootFilesystem %v allowPrivilegeEscalation %v", sc.ReadOnlyRootFilesystem, sc.AllowPrivilegeEscalation)
			}
			if len(fp.Ports) != 0 || slices.ContainsFunc(fp.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "credentials" }) {
				t.Errorf("fastpath ports %v mounts %+v: want no port and no credentials", fp.Ports, fp.VolumeMounts)
			}
			if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "fastpath" && v.EmptyDir != nil }) {
				t.Error("no fastpath emptyDir")
			}
		}},
		{"Disabled: no fastpath container, no emptyDir", rendertest.TurnServer("ts", fastPathDisabled), func(t *testing.T, ds *appsv1.DaemonSet) {
			spec := ds.Spec.Template.Spec
			if len(spec.Containers) != 1 || slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "fastpath" }) {
				t.Errorf("%d containers, volumes %+v", len(spec.Containers), spec.Volumes)
			}
		}},
		{"DTLS is a UDP hostPort with a certificate volume", rendertest.TurnServer("ts", tls), func(t *testing.T, ds *appsv1.DaemonSet) {
			p := ds.Spec.Template.Spec.Containers[0].Ports[1]
			if p.Protocol != corev1.ProtocolUDP || p.HostPort != 443 {
				t.Errorf("port %+v", p)
			}
			v := ds.Spec.Template.Spec.Volumes[3] // after config, credentials, node
			if v.Name != "tls-turns" || v.Secret.SecretName != "cert" {
				t.Errorf("volume %+v", v)
			}
		}},
		{"the node's entry is the pod's annotation, as a file", rendertest.TurnServer("ts"), func(t *testing.T, ds *appsv1.DaemonSet) {
			v := ds.Spec.Template.Spec.Volumes[2]
			if v.Name != "node" || v.DownwardAPI == nil || len(v.DownwardAPI.Items) != 1 ||
				v.DownwardAPI.Items[0].Path != "addresses.json" ||
				v.DownwardAPI.Items[0].FieldRef.FieldPath != "metadata.annotations['turnpike.dev/node-addresses']" {
				t.Errorf("volume %+v", v)
			}
			if cfg := renderRelayConfig(rendertest.TurnServer("ts"), nil); cfg.Addresses.NodeFile != "/etc/turnpike/node/addresses.json" {
				t.Errorf("relay.yaml nodeFile %q", cfg.Addresses.NodeFile)
			}
		}},
		{"health on the metrics port is declared once", rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) { ts.Spec.HealthPort = 9641 }),
			func(t *testing.T, ds *appsv1.DaemonSet) {
				if n := len(ds.Spec.Template.Spec.Containers[0].Ports); n != 2 {
					t.Errorf("%d ports, want udp and metrics", n)
				}
			}},
		{"spec image wins over the operator's", rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) { ts.Spec.Relay.Image = "mine:1" }),
			func(t *testing.T, ds *appsv1.DaemonSet) {
				if img := ds.Spec.Template.Spec.Containers[0].Image; img != "mine:1" {
					t.Errorf("image %q", img)
				}
			}},
		{"placement and priority are copied", rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) {
			ts.Spec.Placement.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}
			ts.Spec.Relay.PriorityClassName = "system-node-critical"
		}), func(t *testing.T, ds *appsv1.DaemonSet) {
			spec := ds.Spec.Template.Spec
			if len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "k" || spec.Tolerations[0].Effect != corev1.TaintEffectNoExecute || spec.PriorityClassName != "system-node-critical" {
				t.Errorf("tolerations %+v priority %q", spec.Tolerations, spec.PriorityClassName)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ac := desiredDaemonSet(tt.ts, "operator:1", "hash")
			ds := &appsv1.DaemonSet{}
			mustCopyJSON(ac, ds)
			tt.check(t, ds)
		})
	}
}

func TestRenderRelayConfigFastPath(t *testing.T) {
	on := []string{"--fast-path-socket", "/run/turnpike/fastpath.sock"}
	tests := []struct {
		name string
		fp   turnpikev1.RelayFastPath
		want config.FastPath
		args []string // the relay's fast-path flags
	}{
		{"Auto by default, through the agent", turnpikev1.RelayFastPath{}, config.FastPath{}, append([]string{"--fast-path", "Auto"}, on...)},
		{"Enabled on named interfaces", turnpikev1.RelayFastPath{Mode: turnpikev1.FastPathEnabled, Interfaces: []string{"eth0", "bond0.100"}},
			config.FastPath{Interfaces: []string{"eth0", "bond0.100"}}, append([]string{"--fast-path", "Enabled"}, on...)},
		{"the older enabled: true is Enabled", turnpikev1.RelayFastPath{Mode: turnpikev1.FastPathAuto, Enabled: true},
			config.FastPath{}, append([]string{"--fast-path", "Enabled"}, on...)},
		{"interfaces of a disabled fast path are left out", turnpikev1.RelayFastPath{Mode: turnpikev1.FastPathDisabled, Interfaces: []string{"eth0"}}, config.FastPath{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) { ts.Spec.Relay.FastPath = tt.fp })
			cfg := renderRelayConfig(ts, nil)
			// No field a relay of the previous release would refuse.
			got := cfg.FastPath
			if got.Mode != "" || got.Enabled || got.Socket != "" || !slices.Equal(got.Interfaces, tt.want.Interfaces) {
				t.Fatalf("fastPath %+v, want %+v", got, tt.want)
			}
			if args := fastPathArgs(ts); !slices.Equal(args, tt.args) {
				t.Errorf("relay flags %q, want %q", args, tt.args)
			}
			// What the operator renders, the relay must accept.
			data, err := config.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := config.ParseRelay(data); err != nil {
				t.Fatalf("relay refuses the rendered relay.yaml: %v", err)
			}
		})
	}
	// A disabled fast path's interfaces do not restart the relays.
	disabled := func(interfaces ...string) func(ts *turnpikev1.TurnServer) {
		return func(ts *turnpikev1.TurnServer) {
			ts.Spec.Relay.FastPath = turnpikev1.RelayFastPath{Mode: turnpikev1.FastPathDisabled, Interfaces: interfaces}
		}
	}
	off := renderRelayConfig(rendertest.TurnServer("ts", disabled()), nil)
	leftover := renderRelayConfig(rendertest.TurnServer("ts", disabled("eth0")), nil)
	onEth0 := renderRelayConfig(rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) { ts.Spec.Relay.FastPath.Interfaces = []string{"eth0"} }), nil)
	if off.SocketHash() != leftover.SocketHash() || off.SocketHash() == onEth0.SocketHash() {
		t.Errorf("socket hashes off %s, disabled with interfaces %s, on eth0 %s", off.SocketHash(), leftover.SocketHash(), onEth0.SocketHash())
	}
}

func TestComputeStatus(t *testing.T) {
	ds := func(gen, observed int64, desired, ready, updated int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Generation: gen},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: observed, DesiredNumberScheduled: desired,
				NumberReady: ready, UpdatedNumberScheduled: updated},
		}
	}
	public := NodeAddresses{[]netip.Addr{netip.MustParseAddr("203.0.113.1")}, turnpikev1.AddressFromExternalIP, true}
	private := NodeAddresses{[]netip.Addr{netip.MustParseAddr("10.0.0.2")}, turnpikev1.AddressFromInternalIP, false}
	n1, n2 := rendertest.Node("n1", nil, nil), rendertest.Node("n2", nil, nil)
	tests := []struct {
		name                        string
		obs                         Observation
		ready, progressing, degrade string // "Status/Reason"
		applyErr                    error
	}{
		{"no DaemonSet yet", Observation{}, "False/Pending", "True/Pending", "False/AsExpected", nil},
		{"DaemonSet not observed", Observation{DaemonSet: ds(2, 1, 1, 1, 1)}, "False/NodesNotReady", "True/RollingOut", "False/AsExpected", nil},
		{"no nodes", Observation{DaemonSet: ds(1, 1, 0, 0, 0)}, "False/NoMatchingNodes", "False/RolledOut", "False/AsExpected", nil},
		{"rolling", Observation{DaemonSet: ds(1, 1, 2, 2, 1)}, "True/AllNodesReady", "True/RollingOut", "False/AsExpected", nil},
		{"all ready", Observation{DaemonSet: ds(1, 1, 2, 2, 2)}, "True/AllNodesReady", "False/RolledOut", "False/AsExpected", nil},
		{"one not ready", Observation{DaemonSet: ds(1, 1, 2, 1, 2)}, "False/NodesNotReady", "False/RolledOut", "False/AsExpected", nil},
		{"internal address", Observation{DaemonSet: ds(1, 1, 1, 1, 1), Nodes: []*corev1.Node{&n2},
			Addresses: map[string]NodeAddresses{"n2": private}}, "True/AllNodesReady", "False/RolledOut", "True/AddressNotPublic", nil},
		{"missing TLS secret", Observation{DaemonSet: ds(1, 1, 1, 0, 1), MissingTLSKeys: []string{"listener tls: Secret x not found"}},
			"False/NodesNotReady", "False/RolledOut", "True/TLSSecretMissing", nil},
		{"port conflict", Observation{Conflict: &portConflict{other: rendertest.TurnServer("old"), node: "n1",
			ours: portClaim{"udp", 3478, 3478, "listener udp"}, their: portClaim{"udp", 3478, 3478, "listener udp"}}},
			"False/PortConflict", "False/PortConflict", "True/PortConflict", nil},
		{"URLs only for ready nodes", Observation{DaemonSet: ds(1, 1, 2, 1, 2), Nodes: []*corev1.Node{&n1, &n2},
			Addresses: map[string]NodeAddresses{"n1": public, "n2": private}, ReadyPods: map[string]bool{"n1": true}},
			"False/NodesNotReady", "False/RolledOut", "True/AddressNotPublic", nil},
		{"apply failed on a ready DaemonSet", Observation{DaemonSet: ds(1, 1, 2, 2, 2)},
			"False/ApplyFailed", "False/RolledOut", "True/ApplyFailed", errors.New(`applying ConfigMap: exceeded quota`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := rendertest.TurnServer("ts")
			st := ComputeStatus(ts, &tt.obs, tt.applyErr)
			for typ, want := range map[string]string{turnpikev1.ConditionReady: tt.ready,
				turnpikev1.ConditionProgressing: tt.progressing, turnpikev1.ConditionDegraded: tt.degrade} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || fmt.Sprintf("%s/%s", c.Status, c.Reason) != want || c.ObservedGeneration != 1 {
					t.Errorf("%s = %+v, want %s at generation 1", typ, c, want)
				}
			}
			if st.ObservedGeneration != 1 {
				t.Errorf("observedGeneration %d", st.ObservedGeneration)
			}
		})
	}

	// Published addresses and URLs come from ready nodes only.
	obs := tests[len(tests)-2].obs
	st := ComputeStatus(rendertest.TurnServer("ts"), &obs, nil)
	if st.AddressSummary != "203.0.113.1" || !slices.Equal(st.URLs, []string{"turn:203.0.113.1:3478?transport=udp"}) || st.NodeSummary != "1/2" {
		t.Errorf("addresses %q urls %v nodes %q", st.AddressSummary, st.URLs, st.NodeSummary)
	}
}

func TestTurnURLs(t *testing.T) {
	ts := rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) {
		ts.Spec.Listeners = []turnpikev1.Listener{
			{Name: "udp", Protocol: turnpikev1.ProtocolUDP, Port: 3478},
			{Name: "tcp", Protocol: turnpikev1.ProtocolTCP, Port: 3478},
			{Name: "tls", Protocol: turnpikev1.ProtocolTLS, Port: 443},
			{Name: "dtls", Protocol: turnpikev1.ProtocolDTLS, Port: 5349},
		}
	})
	got := turnURLs(ts, urlHosts([]netip.Addr{netip.MustParseAddr("2001:db8::1")}))
	want := []string{
		"turn:[2001:db8::1]:3478?transport=udp",
		"turn:[2001:db8::1]:3478?transport=tcp",
		"turns:[2001:db8::1]:443?transport=tcp",
		"turns:[2001:db8::1]:5349?transport=udp",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestComputeStatusIsBounded computes the status of a TurnServer on 10,000
// nodes: its size must not grow with them.
func TestComputeStatusIsBounded(t *testing.T) {
	const total = 10000
	obs := Observation{Addresses: map[string]NodeAddresses{}, ReadyPods: map[string]bool{}}
	wantAttention := int32(0)
	for i := range total {
		n := rendertest.Node(fmt.Sprintf("node-%05d", i), nil, nil)
		v4 := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		a := NodeAddresses{[]netip.Addr{v4, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})}, turnpikev1.AddressFromExternalIP, true}
		switch {
		case i%100 == 1: // no public address
			a = NodeAddresses{[]netip.Addr{v4}, turnpikev1.AddressFromInternalIP, false}
			obs.ReadyPods[n.Name] = true
			wantAttention++
		case i%100 == 2: // relay not ready
			wantAttention++
		case i%100 == 3: // cordoned: ready, but not given to apps
			n.Spec.Unschedulable = true
			obs.ReadyPods[n.Name] = true
		default:
			obs.ReadyPods[n.Name] = true
		}
		obs.Nodes = append(obs.Nodes, &n)
		obs.Addresses[n.Name] = a
	}
	ts := rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) {
		ts.Spec.Listeners = append(ts.Spec.Listeners, turnpikev1.Listener{Name: "tcp", Protocol: turnpikev1.ProtocolTCP, Port: 3478})
		ts.Spec.URLNodesPerFamily = 3
	})
	st := ComputeStatus(ts, &obs, nil)

	if st.NodesNeedingAttention != wantAttention || len(st.AttentionNodes) != turnpikev1.MaxAttentionNodes {
		t.Errorf("%d nodes needing attention, %d listed; want %d, %d listed", st.NodesNeedingAttention, len(st.AttentionNodes), wantAttention, turnpikev1.MaxAttentionNodes)
	}
	first := st.AttentionNodes[0]
	if first.Name != "node-00001" || !slices.Equal(first.Problems, []turnpikev1.NodeProblem{turnpikev1.NodeAddressNotPublic}) {
		t.Errorf("first node needing attention %+v", first)
	}
	// 3 nodes per family, 2 listeners each.
	if len(st.URLs) != 3*2*2 {
		t.Errorf("%d URLs, want 12: %v", len(st.URLs), st.URLs)
	}
	for _, u := range st.URLs {
		for _, cordoned := range []string{"198.18.0.3:", "198.18.1.103:"} { // nodes 3, 103 (i%100 == 3)
			if strings.Contains(u, cordoned) {
				t.Errorf("URL %s is of a cordoned node", u)
			}
		}
	}
	degraded := meta.FindStatusCondition(st.Conditions, turnpikev1.ConditionDegraded)
	if degraded == nil || !strings.Contains(degraded.Message, "node-00001, node-00101, node-00201, node-00301, node-00401 and more") {
		t.Errorf("Degraded %+v", degraded)
	}
	size, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status of %d nodes: %d bytes", total, len(size))
	if len(size) > 8<<10 {
		t.Errorf("status of %d nodes is %d bytes: it grows with the nodes", total, len(size))
	}
}

func TestRolledOutWithNodeVolume(t *testing.T) {
	ds := func(volume string, generation, observed int64, desired, updated int32) *appsv1.DaemonSet {
		d := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Generation: generation},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: observed, DesiredNumberScheduled: desired, UpdatedNumberScheduled: updated}}
		d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "config"}, {Name: volume}}
		return d
	}
	tests := []struct {
		name string
		ds   *appsv1.DaemonSet
		want bool
	}{
		{"rolled out", ds("node", 2, 2, 3, 3), true},
		{"no node volume: an earlier release's template", ds("credentials", 2, 2, 3, 3), false},
		{"template not seen yet", ds("node", 2, 1, 3, 3), false},
		{"rolling", ds("node", 2, 2, 3, 1), false},
		{"no nodes", ds("node", 1, 1, 0, 0), true},
	}
	for _, tt := range tests {
		if got := rolledOutWithNodeVolume(tt.ds); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRenderRelayConfigForEarlierRelays(t *testing.T) {
	a := NodeAddresses{[]netip.Addr{netip.MustParseAddr("203.0.113.1")}, turnpikev1.AddressFromExternalIP, true}
	cfg := renderRelayConfig(rendertest.TurnServer("ts"), map[string]NodeAddresses{"n1": a})
	if cfg.Addresses.NodeFile != "" || fmt.Sprint(cfg.Addresses.Nodes) != "map[n1:{[203.0.113.1] ExternalIP}]" {
		t.Errorf("nodeFile %q, nodes %v: want every node listed and no node file", cfg.Addresses.NodeFile, cfg.Addresses.Nodes)
	}
}
