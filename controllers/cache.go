package controllers

import (
	"maps"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// CacheByObject is how the operator's cache holds the kinds a large cluster
// has many of. Only relay pods and the operator's own Secrets are cached, and
// of nodes and relay pods only the fields the controllers read: a node's image list, conditions and
// managedFields are most of its size, and there is one per node.
//
// Generated objects (ConfigMaps, Secrets, DaemonSets, ...) keep their
// managedFields: applyIfChanged reads them.
func CacheByObject() map[client.Object]cache.ByObject {
	relayPods := labels.SelectorFromSet(labels.Set{
		"app.kubernetes.io/name": "turnpike", "app.kubernetes.io/component": "relay",
	})
	return map[client.Object]cache.ByObject{
		&corev1.Node{}: {Transform: trimNode},
		&corev1.Pod{}:  {Label: relayPods, Transform: trimPod},
		// Only the Secrets the operator writes; users' TLS Secrets are read
		// through tlsSecrets.
		&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{"app.kubernetes.io/managed-by": "turnpike-operator"})},
	}
}

// trimNode keeps what placement and addresses read: name, labels, the
// external-ip annotation, taints, unschedulable and addresses.
func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // a deleted-object tombstone
	}
	out := &corev1.Node{
		TypeMeta: n.TypeMeta,
		Spec:     corev1.NodeSpec{Taints: n.Spec.Taints, Unschedulable: n.Spec.Unschedulable},
		Status:   corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
	out.Name, out.UID, out.ResourceVersion, out.Labels = n.Name, n.UID, n.ResourceVersion, n.Labels
	out.CreationTimestamp, out.DeletionTimestamp = n.CreationTimestamp, n.DeletionTimestamp
	if v, ok := n.Annotations[turnpikev1.AnnotationExternalIP]; ok {
		out.Annotations = map[string]string{turnpikev1.AnnotationExternalIP: v}
	}
	return out, nil
}

// trimPod keeps what the controllers read of a relay pod: its name, labels,
// node-addresses annotation and deletion time, its node and its Ready
// condition. Owner references, the template's other annotations and
// managedFields are most of a pod's metadata, and there is one per node.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{TypeMeta: p.TypeMeta, Spec: corev1.PodSpec{NodeName: p.Spec.NodeName}}
	out.Name, out.Namespace, out.UID, out.ResourceVersion = p.Name, p.Namespace, p.UID, p.ResourceVersion
	out.Labels = relayPodLabels.share(p.Labels)
	out.CreationTimestamp, out.DeletionTimestamp = p.CreationTimestamp, p.DeletionTimestamp
	if v, ok := p.Annotations[turnpikev1.AnnotationNodeAddresses]; ok {
		out.Annotations = map[string]string{turnpikev1.AnnotationNodeAddresses: v}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{c}
		}
	}
	return out, nil
}

// relayPodLabels lets relay pods with the same labels share one map. The
// pods of a DaemonSet revision all have the same labels, so 10,000 relay
// pods hold one map instead of 10,000. Cached objects are never changed
// (the cache hands out its own objects, and copies are deep).
var relayPodLabels sharedMap

// sharedMap remembers the last map it was given.
type sharedMap struct {
	mu   sync.Mutex
	last map[string]string
}

// share returns the remembered map if it equals m, else remembers m.
func (s *sharedMap) share(m map[string]string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil && maps.Equal(s.last, m) {
		return s.last
	}
	s.last = m
	return m
}
