package controllers

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"

	"github.com/turnpike-dev/turnpike/controllers/render"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// TestTrimNode: a trimmed node is placed, addressed and compared exactly as
// the full one, and is a fraction of its size.
func TestTrimNode(t *testing.T) {
	full := rendertest.Node("n1", map[string]string{"turnpike.dev/relay": "true", "topology.kubernetes.io/zone": "a"},
		[]corev1.Taint{{Key: "dedicated", Value: "media", Effect: corev1.TaintEffectNoSchedule}},
		externalIP("198.51.100.1"), internalIP("10.0.0.1"))
	full.Annotations = map[string]string{turnpikev1.AnnotationExternalIP: "203.0.113.1", "node.alpha.kubernetes.io/ttl": "0"}
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}
	for i := range 50 { // a node's image list is most of its size
		full.Status.Images = append(full.Status.Images, corev1.ContainerImage{
			Names: []string{fmt.Sprintf("registry.example/team/image-%d@sha256:%064d", i, i)}, SizeBytes: 1 << 20})
	}
	full.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Message: "kubelet is posting ready status"}}
	trimmedObj, err := trimNode(&full)
	if err != nil {
		t.Fatal(err)
	}
	trimmed := trimmedObj.(*corev1.Node)

	tolerating := rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) {
		ts.Spec.Placement.NodeSelector = map[string]string{"turnpike.dev/relay": "true"}
		ts.Spec.Placement.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
	})
	for _, ts := range []*turnpikev1.TurnServer{rendertest.TurnServer("plain"), tolerating} {
		if render.SelectsNode(ts, trimmed) != render.SelectsNode(ts, &full) {
			t.Errorf("%s: selects the trimmed node %v, the full one %v", ts.Name, render.SelectsNode(ts, trimmed), render.SelectsNode(ts, &full))
		}
		if a, b := render.ResolveNodeAddresses(ts, trimmed), render.ResolveNodeAddresses(ts, &full); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s: addresses %v, full node %v", ts.Name, a, b)
		}
	}
	if nodeChangeMatters(&full, trimmed) {
		t.Error("trimming changed something that matters")
	}
	fullSize, trimmedSize := jsonSize(t, &full), jsonSize(t, trimmed)
	t.Logf("cached node: %d bytes of %d", trimmedSize, fullSize)
	if trimmedSize*4 > fullSize {
		t.Errorf("trimmed node %d bytes, full %d", trimmedSize, fullSize)
	}
}

func TestTrimPod(t *testing.T) {
	ts := rendertest.TurnServer("ts")
	full := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: render.RelayLabels(ts),
			Annotations:     map[string]string{turnpikev1.AnnotationNodeAddresses: `{"source":"STUN"}`, "kubectl.kubernetes.io/default-container": "relay"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "ts-relay"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "relay", Image: "x", Args: []string{"relay"}}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	obj, err := trimPod(full)
	if err != nil {
		t.Fatal(err)
	}
	p := obj.(*corev1.Pod)
	if !render.PodReady(p) || p.Spec.NodeName != "n1" || p.Annotations[turnpikev1.AnnotationNodeAddresses] != `{"source":"STUN"}` ||
		p.Labels[turnpikev1.LabelTurnServer] != "ts" {
		t.Errorf("trimmed pod lost what the controllers read: %+v", p)
	}
	if p.ManagedFields != nil || p.OwnerReferences != nil || len(p.Annotations) != 1 || len(p.Spec.Containers) != 0 || len(p.Status.Conditions) != 1 {
		t.Errorf("trimmed pod keeps what nobody reads: %+v", p)
	}
	if full.ManagedFields == nil || len(full.Annotations) != 2 {
		t.Error("trimming changed the informer's object")
	}

	// Another pod of the same DaemonSet holds the same labels: one map for both.
	other := full.DeepCopy()
	other.Name = "p2"
	obj, err = trimPod(other)
	if err != nil {
		t.Fatal(err)
	}
	if q := obj.(*corev1.Pod); reflect.ValueOf(q.Labels).UnsafePointer() != reflect.ValueOf(p.Labels).UnsafePointer() || q.Name != "p2" {
		t.Error("two relay pods with the same labels hold two maps")
	}
}

func jsonSize(t *testing.T, v any) int {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}
