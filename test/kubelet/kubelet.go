// Package kubelet stands in for a node's kubelet (and, where one is
// needed, the DaemonSet controller) wherever turnpike runs a relay pod
// without a real node: the playground (hack/playground), the end-to-end
// node agent (test/e2e) and the integration test (test/integration). It
// writes a pod's ConfigMap, Secret and downward-API volumes into files and
// says what status the kubelet would report for it.
//
// Paths: a volume mounted at M in the pod lives at root/M here, and in
// ConfigMap files every "M/" is rewritten to "root/M/" (relay.yaml names
// the TLS certificates in the Secret's mount). Nothing else is changed.
package kubelet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DaemonPod is the pod the DaemonSet controller makes of ds for node: the
// template's labels, annotations and spec, owned by ds, bound to node.
func DaemonPod(ds *appsv1.DaemonSet, node string) *corev1.Pod {
	tmpl := ds.Spec.Template
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: ds.Name + "-" + node, Namespace: ds.Namespace,
			Labels: tmpl.Labels, Annotations: tmpl.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))},
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = node
	return pod
}

// HostPath is where path p of the pod's first container lives under root:
// moved there if it lies in one of the container's mounts, else unchanged.
func HostPath(pod *corev1.Pod, root, p string) string {
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/") {
			return filepath.Join(root, p)
		}
	}
	return p
}

// RelayFiles are the relay container's --config and --credentials
// arguments, mapped under root as HostPath does.
func RelayFiles(pod *corev1.Pod, root string) (configPath, credentialsDir string, err error) {
	cmd := pod.Spec.Containers[0].Command
	for i := 0; i+1 < len(cmd); i++ {
		switch cmd[i] {
		case "--config":
			configPath = HostPath(pod, root, cmd[i+1])
		case "--credentials":
			credentialsDir = HostPath(pod, root, cmd[i+1])
		}
	}
	if configPath == "" {
		return "", "", fmt.Errorf("relay container command %q has no --config", strings.Join(cmd, " "))
	}
	return configPath, credentialsDir, nil
}

// SyncVolumes writes the ConfigMap, Secret and downward-API volumes the
// pod's first container mounts under root, and creates its emptyDirs, as the kubelet keeps them in
// sync: only files whose content changed, each through a rename.
func SyncVolumes(ctx context.Context, c client.Reader, pod *corev1.Pod, root string) error {
	mounts := map[string]string{} // volume name -> mount path
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, v := range pod.Spec.Volumes {
		if mounts[v.Name] == "" {
			continue // not this container's
		}
		if v.EmptyDir != nil {
			// Shared between the pod's containers (the fast path's socket).
			if err := os.MkdirAll(filepath.Join(root, mounts[v.Name]), 0o777); err != nil {
				return err
			}
			continue
		}
		files, err := volumeFiles(ctx, c, pod, v)
		if err != nil {
			return err
		}
		if v.ConfigMap != nil {
			for name, data := range files {
				files[name] = rewriteMountPaths(pod, root, data)
			}
		}
		for name, data := range files {
			if err := WriteIfChanged(filepath.Join(root, mounts[v.Name], name), data); err != nil {
				return err
			}
		}
	}
	return nil
}

// volumeFiles reads the files a ConfigMap, Secret or downward-API volume holds.
func volumeFiles(ctx context.Context, c client.Reader, pod *corev1.Pod, v corev1.Volume) (map[string][]byte, error) {
	switch {
	case v.ConfigMap != nil:
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: v.ConfigMap.Name}, cm); err != nil {
			return nil, fmt.Errorf("ConfigMap %s: %w", v.ConfigMap.Name, err)
		}
		files := map[string][]byte{}
		for name, data := range cm.Data {
			files[name] = []byte(data)
		}
		return files, nil
	case v.Secret != nil:
		s := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: v.Secret.SecretName}, s); err != nil {
			return nil, fmt.Errorf("Secret %s: %w", v.Secret.SecretName, err)
		}
		return s.Data, nil
	case v.DownwardAPI != nil:
		return DownwardAPIFiles(v.DownwardAPI, pod)
	}
	return nil, fmt.Errorf("volume %s: only ConfigMap, Secret and downward-API volumes are emulated", v.Name)
}

// rewriteMountPaths points paths inside the pod's mounts at their copies
// under root.
func rewriteMountPaths(pod *corev1.Pod, root string, data []byte) []byte {
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		data = bytes.ReplaceAll(data, []byte(m.MountPath+"/"), []byte(filepath.Join(root, m.MountPath)+"/"))
	}
	return data
}

// RunningStatus is the status the kubelet reports for a host-network pod
// whose one container runs since started, after restarts restarts, ready
// or not.
func RunningStatus(pod *corev1.Pod, hostIP string, started metav1.Time, restarts int32, ready bool) corev1.PodStatus {
	readyCondition := corev1.ConditionFalse
	if ready {
		readyCondition = corev1.ConditionTrue
	}
	now := metav1.Now()
	c := pod.Spec.Containers[0]
	running := true
	return corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: hostIP, HostIPs: []corev1.HostIP{{IP: hostIP}},
		PodIP: hostIP, PodIPs: []corev1.PodIP{{IP: hostIP}}, // host network: the same
		StartTime: &started,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: started},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: started},
			{Type: corev1.ContainersReady, Status: readyCondition, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: readyCondition, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: c.Name, Image: c.Image, Ready: ready, Started: &running, RestartCount: restarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		}},
	}
}

// Condition is the status of a pod's condition t, Unknown when absent.
func Condition(pod *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// WriteIfChanged replaces a file through a rename when its content differs,
// as the kubelet updates mounted volumes, so a reader never sees half a file
// and an unchanged file keeps its modification time. Modes are the
// kubelet's defaults (0644 files), so a container's non-root user reads them.
func WriteIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// DownwardAPIFiles is what the kubelet writes for a downward-API volume of
// pod: each item's field, by its path. Only the metadata fields are
// emulated (name, namespace, one label or annotation); a missing
// label or annotation is an empty file, as with the kubelet.
func DownwardAPIFiles(src *corev1.DownwardAPIVolumeSource, pod *corev1.Pod) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, item := range src.Items {
		if item.FieldRef == nil {
			return nil, fmt.Errorf("downward API file %s: only fieldRef is emulated", item.Path)
		}
		v, err := podField(pod, item.FieldRef.FieldPath)
		if err != nil {
			return nil, fmt.Errorf("downward API file %s: %w", item.Path, err)
		}
		files[item.Path] = []byte(v)
	}
	return files, nil
}

func podField(pod *corev1.Pod, path string) (string, error) {
	for prefix, values := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return values[strings.TrimSuffix(key, "']")], nil
		}
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	}
	return "", fmt.Errorf("field %s is not emulated", path)
}
