package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"

	"github.com/turnpike-dev/turnpike/test/kubelet"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

// kubelets stands in for the kubelets of every node (and for the
// scheduler's one job here, binding, and the pod garbage collector's):
// no relay runs, the pods are only marked running and ready. For each
// relay pod it
//
//   - binds it to the node its daemon-pod affinity names;
//   - marks it Running and Ready, at most readyPerSecond pods a second
//     (kubelets report a node's pod ready one at a time, in parallel over
//     nodes; the bound keeps the benchmark from measuring itself);
//   - deletes it at once (grace 0) when it is being deleted, as the
//     kubelet does when the containers have stopped, or when its node is
//     gone, as the pod garbage collector does (after 40 s; here at once).
type kubelets struct {
	cs      kubernetes.Interface
	pods    cache.Indexer
	nodes   cache.Indexer
	queue   workqueue.TypedRateLimitingInterface[string]
	readyRL flowcontrol.RateLimiter

	mu        sync.Mutex
	lastReady time.Time // when the last pod was marked ready
	ready     int       // pods marked ready so far
}

const (
	relayPodSelector = "app.kubernetes.io/component=relay"
	kubeletWorkers   = 4
)

func startKubelets(ctx context.Context, cs kubernetes.Interface, readyPerSecond float64) (*kubelets, error) {
	k := &kubelets{
		cs:      cs,
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		readyRL: flowcontrol.NewTokenBucketRateLimiter(float32(readyPerSecond), 1),
	}
	all := informers.NewSharedInformerFactory(cs, 0)
	relayPods := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = relayPodSelector }))
	podInformer := relayPods.Core().V1().Pods().Informer()
	nodeInformer := all.Core().V1().Nodes().Informer()
	k.pods, k.nodes = podInformer.GetIndexer(), nodeInformer.GetIndexer()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return nil, err
	}
	// A node's deletion concerns the pods bound to it.
	if _, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(any) {
		for _, key := range k.pods.ListKeys() {
			k.queue.Add(key)
		}
	}}); err != nil {
		return nil, err
	}
	all.Start(ctx.Done())
	relayPods.Start(ctx.Done())
	for typ, ok := range all.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("kubelet stand-in: %v cache did not sync", typ)
		}
	}
	relayPods.WaitForCacheSync(ctx.Done())
	for range kubeletWorkers {
		go k.work(ctx)
	}
	go func() { <-ctx.Done(); k.queue.ShutDown() }()
	return k, nil
}

func (k *kubelets) work(ctx context.Context) {
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		err := k.sync(ctx, key)
		switch {
		case err == nil || apierrors.IsNotFound(err):
			k.queue.Forget(key)
		case ctx.Err() == nil:
			if k.queue.NumRequeues(key) == 0 {
				fmt.Fprintf(os.Stderr, "scale: kubelet stand-in: pod %s: %v (retrying)\n", key, err)
			}
			k.queue.AddRateLimited(key)
		}
		k.queue.Done(key)
	}
}

// sync moves one relay pod one step towards running and ready, or gone.
func (k *kubelets) sync(ctx context.Context, key string) error {
	obj, exists, err := k.pods.GetByKey(key)
	if err != nil || !exists {
		return err
	}
	pod := obj.(*corev1.Pod)
	switch {
	case pod.DeletionTimestamp != nil:
		return k.remove(ctx, pod)
	case pod.Spec.NodeName == "":
		node := testenv.DaemonPodNode(pod)
		if !k.nodeExists(node) {
			return nil
		}
		return k.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		}, metav1.CreateOptions{})
	case !k.nodeExists(pod.Spec.NodeName):
		return k.remove(ctx, pod)
	case kubelet.Condition(pod, corev1.PodReady) != corev1.ConditionTrue:
		if err := k.readyRL.Wait(ctx); err != nil {
			return err
		}
		return k.markReady(ctx, pod)
	}
	return nil
}

func (k *kubelets) nodeExists(name string) bool {
	_, exists, _ := k.nodes.GetByKey(name)
	return exists
}

func (k *kubelets) remove(ctx context.Context, pod *corev1.Pod) error {
	return k.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
}

// markReady writes the status a kubelet writes for a running, ready pod.
func (k *kubelets) markReady(ctx context.Context, pod *corev1.Pod) error {
	now := metav1.Now()
	pod = pod.DeepCopy()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.StartTime = &now
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	started := true
	pod.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	if _, err := k.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return nil // the informer brings the newer pod, and with it another try
		}
		return err
	}
	k.mu.Lock()
	k.lastReady, k.ready = time.Now(), k.ready+1
	k.mu.Unlock()
	return nil
}

// lastReadyAt is when the stand-in last marked a pod ready.
func (k *kubelets) lastReadyAt() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastReady
}

// readyPods is how many relay pods are ready now.
func (k *kubelets) readyPods() int {
	n := 0
	for _, obj := range k.pods.List() {
		if pod := obj.(*corev1.Pod); pod.DeletionTimestamp == nil && kubelet.Condition(pod, corev1.PodReady) == corev1.ConditionTrue {
			n++
		}
	}
	return n
}
