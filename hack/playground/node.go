package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay"
	"github.com/turnpike-dev/turnpike/test/kubelet"
)

// syncInterval is how often the playground re-reads the relay's ConfigMap
// and Secrets, as a kubelet refreshes volumes (the real one takes longer).
const syncInterval = 2 * time.Second

// localNode does for the sample's relay what a node's kubelet and the
// DaemonSet controller would: it materialises the pod's volumes as files,
// runs the relay, and reports the pod ready. The pod's mounts live under
// dir/root (package kubelet says how paths are mapped).
type localNode struct {
	cluster *cluster
	dir     string
	logs    io.Writer

	ds         *appsv1.DaemonSet
	socketHash string
}

// start waits for the operator to create the relay DaemonSet, writes the
// volumes, starts the relay and marks its pod ready. The relay runs until
// ctx ends; its result arrives on the returned channel.
func (k *localNode) start(ctx context.Context, timeout time.Duration) (<-chan error, error) {
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

	configPath, credentialsDir, err := kubelet.RelayFiles(kubelet.DaemonPod(k.ds, k.cluster.nodeName), k.root())
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
func (k *localNode) syncLoop(ctx context.Context) {
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

func (k *localNode) daemonSet(ctx context.Context) (*appsv1.DaemonSet, error) {
	ds := &appsv1.DaemonSet{}
	err := k.cluster.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: sampleServer + "-relay"}, ds)
	return ds, err
}

// root is where the pod's mounts live in the playground.
func (k *localNode) root() string { return filepath.Join(k.dir, "root") }

// syncVolumes writes the relay pod's volumes into their mount paths under
// root, creating the pod first as the DaemonSet controller would.
func (k *localNode) syncVolumes(ctx context.Context) error {
	pod, err := k.ensurePod(ctx)
	if err != nil {
		return err
	}
	return kubelet.SyncVolumes(ctx, k.cluster.client, pod, k.root())
}

// reportReady creates the relay pod on this node, as the DaemonSet
// controller would, and sets its status and the DaemonSet's to ready, as the
// kubelet and the DaemonSet controller would. The operator reads both.
func (k *localNode) reportReady(ctx context.Context) error {
	// The operator annotates the pod (its node addresses) at any time: on a
	// conflict, read the pod again.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := k.ensurePod(ctx)
		if err != nil || kubelet.Condition(pod, corev1.PodReady) == corev1.ConditionTrue {
			return err
		}
		pod.Status = kubelet.RunningStatus(pod, k.cluster.hostIP.String(), metav1.Now(), 0, true)
		return k.cluster.client.Status().Update(ctx, pod)
	})
	if err != nil {
		return fmt.Errorf("marking the relay pod ready: %w", err)
	}
	return k.updateDaemonSetStatus(ctx)
}

// ensurePod is the relay pod on this node, created as the DaemonSet
// controller would if it does not exist yet.
func (k *localNode) ensurePod(ctx context.Context) (*corev1.Pod, error) {
	want := kubelet.DaemonPod(k.ds, k.cluster.nodeName)
	pod := &corev1.Pod{}
	err := k.cluster.client.Get(ctx, client.ObjectKeyFromObject(want), pod)
	if !apierrors.IsNotFound(err) {
		return pod, err
	}
	if err := k.cluster.client.Create(ctx, want); err != nil {
		return nil, fmt.Errorf("creating the relay pod: %w", err)
	}
	return want, nil
}

// updateDaemonSetStatus says one pod is scheduled, current and ready.
func (k *localNode) updateDaemonSetStatus(ctx context.Context) error {
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

// ignoreNotFound drops "not found" (also when wrapped): the object may
// simply not be created yet.
func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
