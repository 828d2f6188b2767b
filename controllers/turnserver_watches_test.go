package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

func TestNodeChangeMatters(t *testing.T) {
	t1, t2 := metav1.NewTime(time.Unix(100, 0)), metav1.NewTime(time.Unix(200, 5))
	base := func(mutate func(*corev1.Node)) *corev1.Node {
		n := corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"relay": "yes"}, Annotations: map[string]string{"other": "x"}},
			Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Value: "media", Effect: corev1.TaintEffectNoSchedule, TimeAdded: &t1}}},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{externalIP("198.51.100.1")}},
		}
		if mutate != nil {
			mutate(&n)
		}
		return &n
	}
	tests := []struct {
		name   string
		mutate func(*corev1.Node)
		want   bool
	}{
		{"nothing", nil, false},
		{"a heartbeat", func(n *corev1.Node) {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, LastHeartbeatTime: t2}}
		}, false},
		{"another annotation", func(n *corev1.Node) { n.Annotations["other"] = "y" }, false},
		{"a taint's time only", func(n *corev1.Node) { n.Spec.Taints[0].TimeAdded = &t2 }, false},
		{"a label", func(n *corev1.Node) { n.Labels["relay"] = "no" }, true},
		{"a taint's effect", func(n *corev1.Node) { n.Spec.Taints[0].Effect = corev1.TaintEffectNoExecute }, true},
		{"a taint more", func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "k"}) }, true},
		{"an address", func(n *corev1.Node) { n.Status.Addresses[0].Address = "198.51.100.2" }, true},
		{"cordoned", func(n *corev1.Node) { n.Spec.Unschedulable = true }, true},
		{"the external-ip annotation", func(n *corev1.Node) { n.Annotations[turnpikev1.AnnotationExternalIP] = "192.0.2.1" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nodeChangeMatters(base(nil), base(tt.mutate)); got != tt.want {
				t.Fatalf("nodeChangeMatters = %v, want %v", got, tt.want)
			}
		})
	}
}
