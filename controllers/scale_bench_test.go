package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/controllers/render"
)

// BenchmarkObjectSizesAt1000Nodes runs a TurnServer on 1,000 nodes with a
// ready relay pod each and 10 credentials, on the suite's API server, and
// reports the size of what the operator writes and what one node's new
// address costs. It measures; the bounds are TestComputeStatusIsBounded's and
// TestOneNodeChangeIsSmall's. Run it alone (creating the objects takes a
// minute or two):
//
//	go test -run XXX -bench ObjectSizes -benchtime 1x ./controllers/
func BenchmarkObjectSizesAt1000Nodes(b *testing.B) {
	const nodes, credentials = 1000, 10
	ctx := context.Background()
	ns := "scale-bench"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}
	for i := range nodes {
		if err := createReadyNode(ctx, fmt.Sprintf("scale-%04d", i), fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)); err != nil {
			b.Fatal(err)
		}
	}
	ts := minimalTurnServer(ns, "relay", "scale", 3478)
	if err := env.Client.Create(ctx, ts); err != nil {
		b.Fatal(err)
	}
	for i := range nodes {
		if err := createReadyRelayPod(ctx, ts, fmt.Sprintf("scale-%04d", i)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range credentials {
		tc := &turnpikev1.TurnCredential{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
				Type: turnpikev1.CredentialStatic, Username: fmt.Sprintf("app-%d", i)},
		}
		if err := env.Client.Create(ctx, tc); err != nil {
			b.Fatal(err)
		}
		publishFirstSecret(b, tc)
	}
	settle(b, ns)

	size := func(obj client.Object, name string) float64 {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
			b.Fatal(err)
		}
		obj.SetManagedFields(nil) // what the operator chose to write, not the API server's bookkeeping
		data, err := json.Marshal(obj)
		if err != nil {
			b.Fatal(err)
		}
		return float64(len(data))
	}
	b.ReportMetric(size(&turnpikev1.TurnServer{}, "relay"), "turnserver-bytes")
	b.ReportMetric(size(&corev1.ConfigMap{}, "relay-relay"), "relay-configmap-bytes")
	b.ReportMetric(size(&corev1.Secret{}, "app-0"), "credential-secret-bytes")

	before := writes.in(ns)
	n := &corev1.Node{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "scale-0500"}, n); err != nil {
		b.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{externalIP("192.0.2.250")}
	if err := env.Client.Status().Update(ctx, n); err != nil {
		b.Fatal(err)
	}
	after := settle(b, ns)
	b.ReportMetric(float64(after.writes-before.writes), "writes/node-change")
	b.ReportMetric(float64(after.bytes-before.bytes), "bytes/node-change")
}

// createReadyNode is newNode without a *testing.T.
func createReadyNode(ctx context.Context, name, addr string) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"suite": "scale"}}}
	if err := env.Client.Create(ctx, n); err != nil {
		return err
	}
	n.Status.Addresses = []corev1.NodeAddress{externalIP(addr)}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if err := env.Client.Status().Update(ctx, n); err != nil {
		return err
	}
	n.Spec.Taints = nil
	return env.Client.Update(ctx, n)
}

// createReadyRelayPod is createRelayPod for a ready pod, without a *testing.T.
func createReadyRelayPod(ctx context.Context, ts *turnpikev1.TurnServer, node string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: ts.Name + "-relay-" + node, Namespace: ts.Namespace, Labels: render.RelayLabels(ts)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "relay", Image: "x"}}},
		Status:     corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	status := pod.Status
	if err := env.Client.Create(ctx, pod); err != nil {
		return err
	}
	for range 10 { // the operator annotates the pod meanwhile
		pod.Status = status
		err := env.Client.Status().Update(ctx, pod)
		if err == nil {
			return nil
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
	}
	return fmt.Errorf("pod %s: status not set", pod.Name)
}
