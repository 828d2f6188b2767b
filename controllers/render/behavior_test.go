package render

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"
	"github.com/turnpike-dev/turnpike/relay/config"
)

func withBehaviorDiscovery(port int32, addrs ...turnpikev1.IPAddress) func(*turnpikev1.TurnServer) {
	return func(ts *turnpikev1.TurnServer) {
		ts.Spec.BehaviorDiscovery = &turnpikev1.BehaviorDiscovery{AlternatePort: port, AlternateAddresses: addrs}
	}
}

// TestRenderBehaviorDiscovery: spec.behaviorDiscovery reaches relay.yaml,
// which the relay accepts, and its port is a UDP hostPort of the relay
// container; without it relay.yaml and the ports are as before.
func TestRenderBehaviorDiscovery(t *testing.T) {
	ts := rendertest.TurnServer("ts", withBehaviorDiscovery(3479, "198.51.100.2", "2001:db8::2"))
	data, err := config.Marshal(renderRelayConfig(ts, nil))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := config.ParseRelay(data)
	if err != nil {
		t.Fatalf("relay refuses the rendered relay.yaml: %v\n%s", err, data)
	}
	bd := parsed.STUN.BehaviorDiscovery
	if bd == nil || bd.AlternatePort != 3479 || !slices.Equal(bd.AlternateAddresses, []string{"198.51.100.2", "2001:db8::2"}) {
		t.Errorf("relay.yaml stun.behaviorDiscovery = %+v\n%s", bd, data)
	}
	if off := renderRelayConfig(rendertest.TurnServer("ts"), nil); off.STUN.BehaviorDiscovery != nil {
		t.Error("behaviorDiscovery rendered without spec.behaviorDiscovery")
	}

	ds := &appsv1.DaemonSet{}
	mustCopyJSON(desiredDaemonSet(ts, "operator:1", "hash"), ds)
	want := corev1.ContainerPort{Name: behaviorPortName, Protocol: corev1.ProtocolUDP, ContainerPort: 3479, HostPort: 3479}
	if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Ports, want) {
		t.Errorf("container ports %+v lack %+v", ds.Spec.Template.Spec.Containers[0].Ports, want)
	}
	low := &appsv1.DaemonSet{}
	mustCopyJSON(desiredDaemonSet(rendertest.TurnServer("ts", withBehaviorDiscovery(479)), "operator:1", "hash"), low)
	if add := low.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add; !slices.Equal(add, []corev1.Capability{"NET_BIND_SERVICE"}) {
		t.Errorf("alternate port 479: capabilities %v, want NET_BIND_SERVICE", add)
	}
}

// TestBehaviorDiscoveryPortConflict: the alternate port claims its UDP
// port on the node like a listener.
func TestBehaviorDiscoveryPortConflict(t *testing.T) {
	at := func(sec int64) func(*turnpikev1.TurnServer) {
		return func(ts *turnpikev1.TurnServer) { ts.CreationTimestamp = metav1.Unix(1000+sec, 0) }
	}
	elsewhere := func(ts *turnpikev1.TurnServer) {
		ts.Spec.Listeners = []turnpikev1.Listener{{Name: "udp", Protocol: turnpikev1.ProtocolUDP, Port: 3479}}
		ts.Spec.MetricsPort, ts.Spec.HealthPort = 9700, 9701
		ts.Spec.RelayPortRange = turnpikev1.PortRange{Min: 30000, Max: 30999}
	}
	a := rendertest.Node("a", nil, nil)
	nodes := []*corev1.Node{&a}
	old := rendertest.TurnServer("old", at(1), withBehaviorDiscovery(3479))
	for _, tt := range []struct {
		name string
		ts   *turnpikev1.TurnServer
		want string
	}{
		{"a UDP listener on the older one's alternate port", rendertest.TurnServer("x", at(2), elsewhere), "behaviour discovery alternate port"},
		{"a TCP listener there is fine", rendertest.TurnServer("x", at(2), elsewhere, func(ts *turnpikev1.TurnServer) {
			ts.Spec.Listeners[0].Protocol = turnpikev1.ProtocolTCP
		}), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := FindPortConflict(tt.ts, []turnpikev1.TurnServer{*old, *tt.ts}, nodes)
			got := ""
			if c != nil {
				got = c.their.what
			}
			if got != tt.want {
				t.Errorf("conflict %q, want %q", got, tt.want)
			}
		})
	}
}
