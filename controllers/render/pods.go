package render

import corev1 "k8s.io/api/core/v1"

// ReadyNodes maps node names to whether the relay pod there is ready. A
// terminating pod is not: its relay is draining.
func ReadyNodes(pods []*corev1.Pod) map[string]bool {
	ready := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName != "" && p.DeletionTimestamp.IsZero() && PodReady(p) {
			ready[p.Spec.NodeName] = true
		}
	}
	return ready
}

func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
