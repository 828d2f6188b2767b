package controllers

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// tlsSecrets reads the TLS Secrets that TurnServers name. Those are users'
// Secrets, and the operator's cache holds only the Secrets it writes (by
// label): a cluster can have thousands of others, some large (Helm keeps
// every release in one). Of every Secret it keeps the metadata only, in a
// cache of its own (one cache cannot hold a kind both label-selected and
// not), which wakes the TurnServers naming a Secret when it changes; a
// named Secret's data is read from the API server only when its
// resourceVersion changed.
type tlsSecrets struct {
	metadata cache.Cache   // metadata of every Secret, without managedFields
	api      client.Reader // the API server, uncached

	mu      sync.Mutex
	checked map[client.ObjectKey]tlsSecretCheck
}

// tlsSecretCheck is what a Secret held at one resourceVersion.
type tlsSecretCheck struct {
	resourceVersion string
	complete        bool // it has a non-empty tls.crt and tls.key
}

func newTLSSecrets(mgr ctrl.Manager) (*tlsSecrets, error) {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(c); err != nil {
		return nil, err
	}
	return &tlsSecrets{metadata: c, api: mgr.GetAPIReader(), checked: map[client.ObjectKey]tlsSecretCheck{}}, nil
}

// secretMetadata is the object the metadata cache holds Secrets as.
func secretMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// check reports whether the Secret key exists and holds a certificate and key.
func (s *tlsSecrets) check(ctx context.Context, key client.ObjectKey) (found, complete bool, err error) {
	m := secretMetadata()
	if err := s.metadata.Get(ctx, key, m); apierrors.IsNotFound(err) {
		return false, false, nil
	} else if err != nil {
		return false, false, err
	}
	s.mu.Lock()
	last, ok := s.checked[key]
	s.mu.Unlock()
	if ok && last.resourceVersion == m.ResourceVersion {
		return true, last.complete, nil
	}
	secret := &corev1.Secret{}
	if err := s.api.Get(ctx, key, secret); apierrors.IsNotFound(err) {
		return false, false, nil
	} else if err != nil {
		return false, false, err
	}
	complete = len(secret.Data[corev1.TLSCertKey]) > 0 && len(secret.Data[corev1.TLSPrivateKeyKey]) > 0
	s.mu.Lock()
	s.checked[key] = tlsSecretCheck{secret.ResourceVersion, complete}
	s.mu.Unlock()
	return true, complete, nil
}
