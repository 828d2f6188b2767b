// Package rendertest builds the API objects that the tests of the operator's
// pure builders (package render) and of its controllers start from.
package rendertest

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// TurnServer is a minimal valid TurnServer in namespace "ns", one UDP
// listener on 3478, changed by mutate.
func TurnServer(name string, mutate ...func(*turnpikev1.TurnServer)) *turnpikev1.TurnServer {
	ts := &turnpikev1.TurnServer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), Generation: 1},
		Spec: turnpikev1.TurnServerSpec{
			Realm:          "example.org",
			Listeners:      []turnpikev1.Listener{{Name: "udp", Protocol: turnpikev1.ProtocolUDP, Port: 3478}},
			RelayPortRange: turnpikev1.PortRange{Min: 49152, Max: 65535},
			MetricsPort:    9641,
			HealthPort:     9642,
		},
	}
	for _, m := range mutate {
		m(ts)
	}
	return ts
}

// Node is a node with the given labels, taints and addresses.
func Node(name string, labels map[string]string, taints []corev1.Taint, addrs ...corev1.NodeAddress) corev1.Node {
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.NodeSpec{Taints: taints},
		Status:     corev1.NodeStatus{Addresses: addrs},
	}
}

// ExternalIP is a node's ExternalIP address.
func ExternalIP(a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: a}
}

// InternalIP is a node's InternalIP address.
func InternalIP(a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a}
}
