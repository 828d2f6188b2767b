package render

import (
	"errors"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"
	"github.com/turnpike-dev/turnpike/relay/config"
)

func TestOlderRelaysMayRun(t *testing.T) {
	withNodeFile := &config.Relay{Addresses: config.Addresses{NodeFile: "/etc/turnpike/node/addresses.json"}}
	listingNodes := &config.Relay{}
	rolling := &appsv1.DaemonSet{Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, UpdatedNumberScheduled: 1}}
	rolling.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: nodeVolumeName}}
	rolledOut := rolling.DeepCopy()
	rolledOut.Status.UpdatedNumberScheduled = 2
	for _, tt := range []struct {
		name string
		live *config.Relay
		ds   *appsv1.DaemonSet
		want bool
	}{
		{"new TurnServer", nil, nil, false},
		{"relay.yaml names the node file", withNodeFile, rolling, false},
		{"earlier release, rolling out", listingNodes, rolling, true},
		{"earlier release, rolled out", listingNodes, rolledOut, false},
		{"unreadable relay.yaml, rolling out", nil, rolling, true},
	} {
		if got := olderRelaysMayRun(tt.live, tt.ds); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBundleGeneration(t *testing.T) {
	bundle := func(gen int64, key string) *config.Credentials {
		return &config.Credentials{Version: config.Version, Generation: gen, Users: []config.User{{Username: "u", Key: key}}}
	}
	for _, tt := range []struct {
		name       string
		live, want *config.Credentials
		generation int64
	}{
		{"first bundle", nil, bundle(0, "a"), 1},
		{"same keys", bundle(7, "a"), bundle(0, "a"), 7},
		{"a new key", bundle(7, "a"), bundle(0, "b"), 8},
	} {
		if got, err := bundleGeneration(tt.live, tt.want); err != nil || got != tt.generation {
			t.Errorf("%s: %d, %v; want %d", tt.name, got, err, tt.generation)
		}
	}
}

// TestRelayHoldsBackTheDaemonSet: while an older TurnServer holds the
// ports, everything but the DaemonSet is rendered.
func TestRelayHoldsBackTheDaemonSet(t *testing.T) {
	ts := rendertest.TurnServer("ts")
	objs, err := Relay(ts, &Observation{}, "img")
	if err != nil || objs.DaemonSet == nil || objs.ConfigMap == nil || objs.DNSEndpoint != nil {
		t.Fatalf("free ports: %+v, %v", objs, err)
	}
	conflict := &portConflict{other: rendertest.TurnServer("old"), ours: portClaim{transport: "udp"}, their: portClaim{transport: "udp"}}
	objs, err = Relay(ts, &Observation{Conflict: conflict}, "img")
	if err != nil || objs.DaemonSet != nil || objs.ConfigMap == nil || objs.Credentials == nil {
		t.Fatalf("port conflict: %+v, %v", objs, err)
	}
}

func TestObserveFailedStatus(t *testing.T) {
	ts := rendertest.TurnServer("ts")
	ts.Status.URLs = []string{"turn:192.0.2.1:3478?transport=udp"}
	ts.Status.Conditions = []metav1.Condition{{Type: turnpikev1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonAllNodesReady,
		LastTransitionTime: metav1.NewTime(time.Unix(100, 0))}}
	st := ObserveFailedStatus(ts, errors.New("listing nodes: timeout"))
	d := meta.FindStatusCondition(st.Conditions, turnpikev1.ConditionDegraded)
	if d == nil || d.Status != metav1.ConditionTrue || d.Reason != ReasonObserveFailed || d.Message != "listing nodes: timeout; retrying" {
		t.Errorf("Degraded = %+v", d)
	}
	if len(st.URLs) != 1 || meta.FindStatusCondition(st.Conditions, turnpikev1.ConditionReady).Reason != ReasonAllNodesReady {
		t.Errorf("the rest of the status changed: %+v", st)
	}
	if len(ts.Status.Conditions) != 1 {
		t.Error("the TurnServer's own status was changed")
	}
}
