package controllers

import (
	"context"
	"errors"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// Field indexes the reconcilers look objects up by.
const (
	// tlsSecretIndex indexes TurnServers by the TLS Secrets their listeners name.
	tlsSecretIndex = "spec.listeners.tlsSecretRef.name"
	// turnServerRefIndex indexes TurnCredentials by the TurnServer they are for.
	turnServerRefIndex = "spec.turnServerRef.name"
)

// Options configures the operator's controllers.
type Options struct {
	// RelayImage is the relay image of TurnServers that name none.
	RelayImage string
	// StagingDelay is how long relays hold a new secret before apps get it;
	// 0 means DefaultStagingDelay.
	StagingDelay time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// IssuerAddr is where the credential issuing endpoint listens; empty
	// turns it off.
	IssuerAddr string
	// RelayStatus reads a relay's /status; nil means HTTPRelayStatus.
	RelayStatus RelayStatusFunc
	// RelayStatusInterval is how often the ready relays are asked what they
	// discovered with STUN and whether their fast path is active (by the
	// leader), and, with the issuing endpoint on, for their load (by every
	// replica); 0 means DefaultRelayStatusInterval.
	RelayStatusInterval time.Duration
}

// Reconcilers are the operator's reconcilers, as Setup registered them.
type Reconcilers struct {
	TurnServer     *TurnServerReconciler
	TurnCredential *TurnCredentialReconciler
}

// Setup registers the field indexes, every reconciler and the operator's
// metrics with mgr. c is the client the reconcilers use: mgr.GetClient(),
// or a wrapper of it in tests.
func Setup(mgr ctrl.Manager, c client.Client, o Options) (*Reconcilers, error) {
	if o.StagingDelay == 0 {
		o.StagingDelay = DefaultStagingDelay
	}
	if err := registerIndexes(mgr); err != nil {
		return nil, err
	}
	if o.RelayStatusInterval == 0 {
		o.RelayStatusInterval = DefaultRelayStatusInterval
	}
	poller := newRelayStatusPoller(o.RelayStatus, o.RelayStatusInterval)
	if err := mgr.Add(poller); err != nil {
		return nil, err
	}
	tls, err := newTLSSecrets(mgr)
	if err != nil {
		return nil, err
	}
	// Events go through the events.k8s.io API, whose recorder folds
	// repeats into one Event with a count.
	recorder := mgr.GetEventRecorder(FieldOwner)
	r := &Reconcilers{
		TurnServer: &TurnServerReconciler{Client: c, Cache: mgr.GetCache(), RelayImage: o.RelayImage, Now: o.Now, statusPoller: poller, tls: tls,
			Recorder: recorder},
		TurnCredential: &TurnCredentialReconciler{Client: c, Cache: mgr.GetCache(), Now: o.Now, StagingDelay: o.StagingDelay, Recorder: recorder},
	}
	if err := r.TurnServer.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := r.TurnCredential.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if o.IssuerAddr != "" {
		loads := newRelayLoads(cachedObjects{cache: mgr.GetCache(), reader: mgr.GetClient()}, o.RelayStatus, o.RelayStatusInterval)
		if err := mgr.Add(loads); err != nil {
			return nil, err
		}
		issuer := &Issuer{Client: c, Cache: mgr.GetCache(), Now: o.Now, loads: loads}
		if err := mgr.Add(&IssuerServer{Addr: o.IssuerAddr, Handler: issuer.Handler()}); err != nil {
			return nil, err
		}
	}
	if err := metrics.Registry.Register(credentialStates{mgr.GetCache()}); err != nil &&
		!errors.As(err, &prometheus.AlreadyRegisteredError{}) {
		return nil, err
	}
	return r, nil
}

func registerIndexes(mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	err := idx.IndexField(context.Background(), &turnpikev1.TurnServer{}, tlsSecretIndex, func(o client.Object) []string {
		var names []string
		for _, l := range render.TLSListeners(o.(*turnpikev1.TurnServer)) {
			names = append(names, l.TLSSecretRef.Name)
		}
		return names
	})
	if err != nil {
		return err
	}
	return idx.IndexField(context.Background(), &turnpikev1.TurnCredential{}, turnServerRefIndex, func(o client.Object) []string {
		return []string{o.(*turnpikev1.TurnCredential).Spec.TurnServerRef.Name}
	})
}
