package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// syncInterval is how often the playground re-reads the relay's ConfigMap
// and Secrets, as a kubelet refreshes volumes (the real one takes longer).
const syncInterval = 2 * time.Second

// kubelet does for the sample's relay what a node's kubelet and the
// DaemonSet controller would: it materialises the pod's volumes as files,
// runs the relay, and reports the pod ready.
//
// Paths: the relay pod mounts its ConfigMap and Secrets under /etc/turnpike/
// (see the DaemonSet), and relay.yaml names files there (TLS certificates).
// Here every mount path M becomes dir/root/M, and in the ConfigMap's files
// every "M/" is rewritten to "dir/root/M/". Nothing else is changed.
type kubelet struct {
	cluster *cluster
	dir     string
	logs    io.Writer

	ds         *appsv1.DaemonSet
	socketHash string
}

// start waits for the operator to create the relay DaemonSet, writes the
// volumes, starts the relay and marks its pod ready. The relay runs until
// ctx ends; its result arrives on the returned channel.
func (k *kubelet) start(ctx context.Context, timeout time.Duration) (<-chan error, error) {
	say("waiting for the operator to create the relay DaemonSet, ConfigMap and Secrets")
	err := poll(ctx, timeout, "the relay DaemonSet and its volumes", func() (bool, error) {
		ds, err := k.daemonSet(ctx)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		k.ds = ds
		err = k.syncVolumes(ctx)
		return err == nil, ignoreNotFound(err)
	})
	if err != nil {
		return nil, err
	}
	k.socketHash = k.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash]

	configPath, credentialsDir, err := k.relayArgs()
	if err != nil {
		return nil, err
	}
	say("starting the relay as node %s would: relay --config %s --credentials %s", k.cluster.nodeName, configPath, credentialsDir)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Options{
			ConfigPath:     configPath,
			CredentialsDir: credentialsDir,
			LogOutput:      k.logs,
			Version:        "playground",
			NodeName:       k.cluster.nodeName,
			HostIP:         k.cluster.hostIP.String(),
			Started:        func(*relay.Relay) { close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		return nil, fmt.Errorf("the relay did not start: %v", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := k.reportReady(ctx); err != nil {
		return nil, err
	}
	go k.syncLoop(ctx)
	return done, nil
}

// syncLoop keeps files and status current until ctx ends.
func (k *kubelet) syncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(syncInterval):
		}
		ds, err := k.daemonSet(ctx)
		if err == nil {
			k.ds = ds
			err = k.syncVolumes(ctx)
		}
		if err == nil {
			err = k.reportReady(ctx)
		}
		if err != nil && ctx.Err() == nil {
			say("sync: %v", err)
		}
		if h := k.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash]; h != k.socketHash {
			say("the TurnServer changed listeners or ports: a node would restart the relay; restart `make run` to apply")
			k.socketHash = h
		}
	}
}

func (k *kubelet) daemonSet(ctx context.Context) (*appsv1.DaemonSet, error) {
	ds := &appsv1.DaemonSet{}
	err := k.cluster.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: sampleServer + "-relay"}, ds)
	return ds, err
}

// hostPath is where mount path p of the pod lives in the playground.
func (k *kubelet) hostPath(p string) string { return filepath.Join(k.dir, "root", p) }

// syncVolumes writes every ConfigMap and Secret volume of the relay pod
// into its mount path, rewriting only on change, atomically per file.
func (k *kubelet) syncVolumes(ctx context.Context) error {
	spec := k.ds.Spec.Template.Spec
	mounts := map[string]string{} // volume name -> mount path
	for _, m := range spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, v := range spec.Volumes {
		files, err := k.volumeFiles(ctx, v)
		if err != nil {
			return err
		}
		if v.ConfigMap != nil {
			for name, data := range files {
				files[name] = k.rewriteMountPaths(data)
			}
		}
		for name, data := range files {
			if err := testutil.WriteIfChanged(filepath.Join(k.hostPath(mounts[v.Name]), name), data); err != nil {
				return err
			}
		}
	}
	return nil
}

// volumeFiles reads the files a ConfigMap, Secret or downward-API volume holds.
func (k *kubelet) volumeFiles(ctx context.Context, v corev1.Volume) (map[string][]byte, error) {
	files := map[string][]byte{}
	switch {
	case v.ConfigMap != nil:
		cm := &corev1.ConfigMap{}
		if err := k.cluster.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: v.ConfigMap.Name}, cm); err != nil {
			return nil, fmt.Errorf("ConfigMap %s: %w", v.ConfigMap.Name, err)
		}
		for name, data := range cm.Data {
			files[name] = []byte(data)
		}
	case v.Secret != nil:
		s := &corev1.Secret{}
		if err := k.cluster.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: v.Secret.SecretName}, s); err != nil {
			return nil, fmt.Errorf("Secret %s: %w", v.Secret.SecretName, err)
		}
		for name, data := range s.Data {
			files[name] = data
		}
	case v.DownwardAPI != nil:
		// Before the relay pod exists, its annotations are empty files.
		pod := &corev1.Pod{}
		err := k.cluster.client.Get(ctx, k.podKey(), pod)
		if client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("relay pod: %w", err)
		}
		return testutil.DownwardAPIFiles(v.DownwardAPI, pod)
	default:
		return nil, fmt.Errorf("volume %s: the playground only knows ConfigMap, Secret and downward-API volumes", v.Name)
	}
	return files, nil
}

// podKey names the relay pod on this node.
func (k *kubelet) podKey() client.ObjectKey {
	return client.ObjectKey{Namespace: namespace, Name: k.ds.Name + "-" + k.cluster.nodeName}
}

// rewriteMountPaths points paths inside the pod's mounts at their
// playground copies.
func (k *kubelet) rewriteMountPaths(data []byte) []byte {
	for _, m := range k.ds.Spec.Template.Spec.Containers[0].VolumeMounts {
		data = bytes.ReplaceAll(data, []byte(m.MountPath+"/"), []byte(k.hostPath(m.MountPath)+"/"))
	}
	return data
}

// relayArgs reads --config and --credentials from the relay container's
// command and maps them to the playground's files.
func (k *kubelet) relayArgs() (configPath, credentialsDir string, err error) {
	cmd := k.ds.Spec.Template.Spec.Containers[0].Command
	for i := 0; i+1 < len(cmd); i++ {
		switch cmd[i] {
		case "--config":
			configPath = k.hostPath(cmd[i+1])
		case "--credentials":
			credentialsDir = k.hostPath(cmd[i+1])
		}
	}
	if configPath == "" {
		return "", "", fmt.Errorf("relay container command %q has no --config", strings.Join(cmd, " "))
	}
	return configPath, credentialsDir, nil
}

// reportReady creates the relay pod on this node, as the DaemonSet
// controller would, and sets its status and the DaemonSet's to ready, as the
// kubelet and the DaemonSet controller would. The operator reads both.
func (k *kubelet) reportReady(ctx context.Context) error {
	pod, err := k.ensurePod(ctx)
	if err != nil {
		return err
	}
	if !podReady(pod) {
		now := metav1.Now()
		pod.Status = corev1.PodStatus{
			Phase:     corev1.PodRunning,
			HostIP:    k.cluster.hostIP.String(),
			PodIP:     k.cluster.hostIP.String(), // host network
			StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image, Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			}},
		}
		if err := k.cluster.client.Status().Update(ctx, pod); err != nil {
			return fmt.Errorf("marking the relay pod ready: %w", err)
		}
	}
	return k.updateDaemonSetStatus(ctx)
}

func (k *kubelet) ensurePod(ctx context.Context) (*corev1.Pod, error) {
	tmpl := k.ds.Spec.Template
	pod := &corev1.Pod{}
	key := k.podKey()
	err := k.cluster.client.Get(ctx, key, pod)
	if !apierrors.IsNotFound(err) {
		return pod, err
	}
	pod = &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: key.Name, Namespace: key.Namespace,
			Labels: tmpl.Labels, Annotations: tmpl.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(k.ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))},
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = k.cluster.nodeName
	if err := k.cluster.client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating the relay pod: %w", err)
	}
	return pod, nil
}

// updateDaemonSetStatus says one pod is scheduled, current and ready.
func (k *kubelet) updateDaemonSetStatus(ctx context.Context) error {
	want := appsv1.DaemonSetStatus{
		ObservedGeneration:     k.ds.Generation,
		DesiredNumberScheduled: 1, CurrentNumberScheduled: 1, UpdatedNumberScheduled: 1,
		NumberReady: 1, NumberAvailable: 1,
	}
	if equality.Semantic.DeepEqual(k.ds.Status, want) {
		return nil
	}
	k.ds.Status = want
	err := k.cluster.client.Status().Update(ctx, k.ds)
	if apierrors.IsConflict(err) {
		return nil // the next sync reads the newer DaemonSet
	}
	return err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ignoreNotFound drops "not found" (also when wrapped): the object may
// simply not be created yet.
func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
