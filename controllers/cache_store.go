package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/controllers/render"
)

// cachedObjects lists nodes and relay pods as pointers to the informers'
// own objects. client.List copies every struct into its Items even with
// UnsafeDisableDeepCopy (about 1 KiB a node and a pod): at 5,000 nodes each
// pass made ~10 MB of garbage, which was most of what the operator
// allocated in a rollout. The objects are shared with the cache: read only.
type cachedObjects struct {
	cache  cache.Cache   // nil lists through reader
	reader client.Reader // a reader of the same cache, when the informers cannot be reached
}

// nodes returns every node.
func (c cachedObjects) nodes(ctx context.Context) ([]*corev1.Node, error) {
	return storeList(ctx, c, &corev1.Node{}, "", func() ([]*corev1.Node, error) {
		var list corev1.NodeList
		err := c.reader.List(ctx, &list, client.UnsafeDisableDeepCopy)
		return pointers(list.Items), err
	})
}

// relayPods returns ts's relay pods.
func (c cachedObjects) relayPods(ctx context.Context, ts *turnpikev1.TurnServer) ([]*corev1.Pod, error) {
	selector := labels.SelectorFromSet(render.SelectorLabels(ts))
	pods, err := storeList(ctx, c, &corev1.Pod{}, ts.Namespace, func() ([]*corev1.Pod, error) {
		var list corev1.PodList
		err := c.reader.List(ctx, &list, client.InNamespace(ts.Namespace), client.MatchingLabelsSelector{Selector: selector}, client.UnsafeDisableDeepCopy)
		return pointers(list.Items), err
	})
	if err != nil {
		return nil, err
	}
	matching := pods[:0:0]
	for _, p := range pods {
		if selector.Matches(labels.Set(p.Labels)) {
			matching = append(matching, p)
		}
	}
	return matching, nil
}

// turnServers returns every TurnServer.
func (c cachedObjects) turnServers(ctx context.Context) ([]*turnpikev1.TurnServer, error) {
	return storeList(ctx, c, &turnpikev1.TurnServer{}, "", func() ([]*turnpikev1.TurnServer, error) {
		var list turnpikev1.TurnServerList
		err := c.reader.List(ctx, &list, client.UnsafeDisableDeepCopy)
		return pointers(list.Items), err
	})
}

// credentialsOf returns the TurnCredentials of TurnServer ts. Event
// handlers ask this for every node and relay pod event; a List there copied
// every credential of the TurnServer each time, which at a cold start (an
// event for every node and pod) was the operator's peak memory.
func (c cachedObjects) credentialsOf(ctx context.Context, ts client.ObjectKey) ([]*turnpikev1.TurnCredential, error) {
	inNamespace, err := storeList(ctx, c, &turnpikev1.TurnCredential{}, ts.Namespace, func() ([]*turnpikev1.TurnCredential, error) {
		var list turnpikev1.TurnCredentialList
		err := c.reader.List(ctx, &list, client.InNamespace(ts.Namespace),
			client.MatchingFields{turnServerRefIndex: ts.Name}, client.UnsafeDisableDeepCopy)
		return pointers(list.Items), err
	})
	if err != nil {
		return nil, err
	}
	matching := inNamespace[:0:0]
	for _, tc := range inNamespace {
		if tc.Spec.TurnServerRef.Name == ts.Name {
			matching = append(matching, tc)
		}
	}
	return matching, nil
}

// storeList reads the objects of obj's kind (in namespace, unless empty)
// from its informer's store, or with list when there is no such store.
func storeList[T client.Object](ctx context.Context, c cachedObjects, obj T, namespace string, list func() ([]T, error)) ([]T, error) {
	if c.cache == nil {
		return list()
	}
	informer, err := c.cache.GetInformer(ctx, obj)
	if err != nil {
		return nil, err
	}
	shared, ok := informer.(toolscache.SharedIndexInformer)
	if !ok {
		return list()
	}
	var items []any
	if namespace == "" {
		items = shared.GetStore().List()
	} else if items, err = shared.GetIndexer().ByIndex(toolscache.NamespaceIndex, namespace); err != nil {
		return nil, err
	}
	out := make([]T, 0, len(items))
	for _, item := range items {
		if o, ok := item.(T); ok {
			out = append(out, o)
		}
	}
	return out, nil
}

func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
