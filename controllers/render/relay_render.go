package render

import (
	"bytes"
	"encoding/json"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// RelayObjects are a TurnServer's generated objects as they should be.
type RelayObjects struct {
	ServiceAccount *corev1ac.ServiceAccountApplyConfiguration
	ConfigMap      *corev1ac.ConfigMapApplyConfiguration
	Credentials    *corev1ac.SecretApplyConfiguration
	Service        *corev1ac.ServiceApplyConfiguration
	// daemonSet is nil while an older TurnServer holds our ports.
	DaemonSet *appsv1ac.DaemonSetApplyConfiguration
	// podAnnotations are the relay pods whose node-addresses annotation
	// must change.
	PodAnnotations []PodAnnotation
	// DNSEndpoint is nil without spec.hostname.
	DNSEndpoint *unstructured.Unstructured
	// credentialsExpire is when a key in the relay bundle next expires, and
	// the bundle should be tidied; zero for never.
	CredentialsExpire time.Time
}

// PodAnnotation is the turnpike.dev/node-addresses value a relay pod needs.
type PodAnnotation struct {
	Pod   *corev1.Pod
	Value string
}

// Relay computes a TurnServer's generated objects from the
// observation alone. image is the relay image of a TurnServer that names none.
func Relay(ts *turnpikev1.TurnServer, obs *Observation, image string) (*RelayObjects, error) {
	var legacyNodes map[string]NodeAddresses
	if olderRelaysMayRun(obs.LiveRelayConfig, obs.DaemonSet) {
		legacyNodes = obs.Addresses
	}
	cfg := renderRelayConfig(ts, legacyNodes)
	cm, err := desiredConfigMap(ts, cfg)
	if err != nil {
		return nil, err
	}
	bundle := credentialBundle(ts.Spec.Realm, obs.Credentials)
	if bundle.Generation, err = bundleGeneration(obs.LiveBundle, bundle); err != nil {
		return nil, err
	}
	secret, err := desiredCredentialSecret(ts, bundle)
	if err != nil {
		return nil, err
	}
	objs := &RelayObjects{
		ServiceAccount:    desiredServiceAccount(ts),
		ConfigMap:         cm,
		Credentials:       secret,
		Service:           desiredMetricsService(ts),
		PodAnnotations:    podAnnotations(obs),
		CredentialsExpire: credentialsExpire(obs.Credentials),
	}
	if obs.Conflict == nil {
		objs.DaemonSet = desiredDaemonSet(ts, image, cfg.SocketHash())
	}
	if ts.Spec.Hostname != "" {
		objs.DNSEndpoint = desiredDNSEndpoint(ts, publishedAddresses(ts, obs, true))
	}
	return objs, nil
}

// olderRelaysMayRun reports whether relays of a release from before per-pod
// node entries may still run: the live relay.yaml does not name the node
// file yet, and the DaemonSet has not finished rolling out a pod template
// with the node volume. Such a relay refuses a relay.yaml that names the
// node file (an unknown field to it) and then misses every change, new
// credentials included, until it is replaced; so until the rollout ends,
// relay.yaml keeps listing every node, as before. A new TurnServer has no
// such relays, and once relay.yaml names the node file it keeps doing so.
func olderRelaysMayRun(live *config.Relay, ds *appsv1.DaemonSet) bool {
	if live != nil && live.Addresses.NodeFile != "" {
		return false
	}
	return ds != nil && !rolledOutWithNodeVolume(ds)
}

// rolledOutWithNodeVolume reports whether every pod of ds runs a template
// that mounts the node's entry.
func rolledOutWithNodeVolume(ds *appsv1.DaemonSet) bool {
	mounted := slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == nodeVolumeName })
	s := ds.Status
	return mounted && s.ObservedGeneration >= ds.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled
}

// podAnnotations are the relay pods whose turnpike.dev/node-addresses
// annotation differs from their node's addresses. Terminating pods are left
// alone.
func podAnnotations(obs *Observation) []PodAnnotation {
	var out []PodAnnotation
	for _, p := range obs.Pods {
		a, selected := obs.Addresses[p.Spec.NodeName]
		if !selected || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if want := nodeAddressesAnnotation(a); p.Annotations[turnpikev1.AnnotationNodeAddresses] != want {
			out = append(out, PodAnnotation{Pod: p, Value: want})
		}
	}
	return out
}

// credentialsExpire is the soonest time a previous secret in the bundle
// stops being valid, or zero.
func credentialsExpire(entries []CredentialEntry) time.Time {
	var soonest time.Time
	for _, e := range entries {
		if t := e.State.PreviousNotAfter; !t.IsZero() && (soonest.IsZero() || t.Before(soonest)) {
			soonest = t
		}
	}
	return soonest
}

// bundleGeneration keeps the live bundle's generation when the content is
// the same, and adds one when it changed. live is nil when there is none
// or it is unreadable.
func bundleGeneration(live, bundle *config.Credentials) (int64, error) {
	if live == nil {
		return 1, nil
	}
	same, err := sameCredentials(live, bundle)
	if err != nil {
		return 0, err
	}
	if same {
		return live.Generation, nil
	}
	return live.Generation + 1, nil
}

// sameCredentials reports whether two bundles hold the same keys and secrets
// with the same windows, whatever their generations. It compares what the
// relays read, serialized: reflection-based equality panics on the
// time.Time inside a key's NotAfter, which every rotation overlap has. The
// JSON the relays' YAML is made from carries the same content, without
// the YAML conversion, which was a tenth of what a rollout allocated.
func sameCredentials(a, b *config.Credentials) (bool, error) {
	x, y := *a, *b
	x.Generation, y.Generation = 0, 0
	xb, err := json.Marshal(&x)
	if err != nil {
		return false, err
	}
	yb, err := json.Marshal(&y)
	if err != nil {
		return false, err
	}
	return bytes.Equal(xb, yb), nil
}
