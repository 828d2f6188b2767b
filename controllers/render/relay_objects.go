package render

import (
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

const (
	// relayBinary is the turnpike binary inside the image.
	relayBinary = "/turnpike"
	// fastPathMountPath is the emptyDir the relay and the fastpath
	// container share; fastPathSocket the agent's socket in it.
	fastPathMountPath = "/run/turnpike"
	fastPathSocket    = fastPathMountPath + "/fastpath.sock"
	// relayUID is the unprivileged user the relay runs as.
	relayUID int64 = 65532
	// drainSlackSeconds is added to the drain grace period before the kubelet kills
	// the relay, so the relay ends its drain itself.
	drainSlackSeconds = 5
)

// RelayName is the name of every generated object of a TurnServer except the
// credential Secret.
func RelayName(ts *turnpikev1.TurnServer) string { return ts.Name + "-relay" }

// CredentialSecretName is the name of the relay credential bundle Secret.
func CredentialSecretName(ts *turnpikev1.TurnServer) string { return ts.Name + "-relay-credentials" }

// SelectorLabels select a TurnServer's relay pods; they never change, as a
// DaemonSet's selector is immutable.
func SelectorLabels(ts *turnpikev1.TurnServer) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":      "turnpike",
		"app.kubernetes.io/instance":  ts.Name,
		"app.kubernetes.io/component": "relay",
		turnpikev1.LabelTurnServer:    ts.Name,
	}
}

// RelayLabels are put on every generated object.
func RelayLabels(ts *turnpikev1.TurnServer) map[string]string {
	l := SelectorLabels(ts)
	l["app.kubernetes.io/managed-by"] = "turnpike-operator"
	l["app.kubernetes.io/part-of"] = "turnpike"
	return l
}

// ownerReference makes owner, a TurnServer or TurnCredential of the given
// kind, the controller of a generated object, so that deleting the owner
// lets the garbage collector remove it (no finalizers).
func ownerReference(owner metav1.Object, kind string) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(turnpikev1.GroupVersion.String()).
		WithKind(kind).
		WithName(owner.GetName()).
		WithUID(owner.GetUID()).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

func desiredServiceAccount(ts *turnpikev1.TurnServer) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(RelayName(ts), ts.Namespace).
		WithLabels(RelayLabels(ts)).
		WithOwnerReferences(ownerReference(ts, "TurnServer")).
		// The relay is internet-facing: it gets no Kubernetes credentials.
		WithAutomountServiceAccountToken(false)
}

func desiredConfigMap(ts *turnpikev1.TurnServer, cfg *config.Relay) (*corev1ac.ConfigMapApplyConfiguration, error) {
	data, err := config.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("rendering %s: %w", config.RelayFile, err)
	}
	return corev1ac.ConfigMap(RelayName(ts), ts.Namespace).
		WithLabels(RelayLabels(ts)).
		WithOwnerReferences(ownerReference(ts, "TurnServer")).
		WithData(map[string]string{config.RelayFile: string(data)}), nil
}

func desiredCredentialSecret(ts *turnpikev1.TurnServer, creds *config.Credentials) (*corev1ac.SecretApplyConfiguration, error) {
	data, err := config.Marshal(creds)
	if err != nil {
		return nil, fmt.Errorf("rendering %s: %w", config.CredentialsFile, err)
	}
	return corev1ac.Secret(CredentialSecretName(ts), ts.Namespace).
		WithLabels(RelayLabels(ts)).
		WithOwnerReferences(ownerReference(ts, "TurnServer")).
		WithType(corev1.SecretTypeOpaque).
		WithData(map[string][]byte{config.CredentialsFile: data}), nil
}

// desiredMetricsService is a headless Service over the relay pods' metrics
// port, for a ServiceMonitor to find them.
func desiredMetricsService(ts *turnpikev1.TurnServer) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(RelayName(ts), ts.Namespace).
		WithLabels(RelayLabels(ts)).
		WithOwnerReferences(ownerReference(ts, "TurnServer")).
		WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			WithSelector(SelectorLabels(ts)).
			WithPorts(corev1ac.ServicePort().
				WithName("metrics").
				WithProtocol(corev1.ProtocolTCP).
				WithPort(ts.Spec.MetricsPort).
				WithTargetPort(intstr.FromInt32(ts.Spec.MetricsPort))))
}

// desiredDaemonSet is the relay DaemonSet. socketHash goes into the pod
// template, so the pods roll only when the relay needs new sockets; every
// other change reaches the running relays through their mounted files.
func desiredDaemonSet(ts *turnpikev1.TurnServer, image, socketHash string) *appsv1ac.DaemonSetApplyConfiguration {
	spec := &ts.Spec
	if spec.Relay.Image != "" {
		image = spec.Relay.Image
	}
	container := corev1ac.Container().
		WithName("relay").
		WithImage(image).
		WithCommand(append([]string{relayBinary, "relay",
			"--config", path.Join(configMountPath, config.RelayFile),
			"--credentials", credentialsMountPath}, fastPathArgs(ts)...)...).
		WithEnv(nodeEnv()...).
		WithPorts(containerPorts(ts)...).
		WithReadinessProbe(httpProbe("/readyz", spec.HealthPort, 1)).
		WithLivenessProbe(httpProbe("/livez", spec.HealthPort, 3)).
		WithSecurityContext(relaySecurityContext(ts)).
		WithVolumeMounts(volumeMounts(ts)...)
	if spec.Relay.ImagePullPolicy != "" {
		container.WithImagePullPolicy(spec.Relay.ImagePullPolicy)
	}
	if r := spec.Relay.Resources; len(r.Limits) > 0 || len(r.Requests) > 0 {
		// Only what is set: an empty list would differ from the live
		// object on every resync and cause a write each time.
		res := corev1ac.ResourceRequirements()
		if len(r.Limits) > 0 {
			res.WithLimits(r.Limits)
		}
		if len(r.Requests) > 0 {
			res.WithRequests(r.Requests)
		}
		container.WithResources(res)
	}
	if fastPathOn(ts) {
		// Read-only: connecting to a socket needs no write access to its
		// file system, and the relay must not replace the agent's socket.
		container.WithVolumeMounts(fastPathMount().WithReadOnly(true))
	}

	podSpec := corev1ac.PodSpec().
		WithServiceAccountName(RelayName(ts)).
		WithAutomountServiceAccountToken(false).
		WithHostNetwork(true).
		WithDNSPolicy(corev1.DNSClusterFirstWithHostNet).
		WithTerminationGracePeriodSeconds(int64(drainGracePeriod(ts).Seconds()) + drainSlackSeconds).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(relayUID).
			WithRunAsGroup(relayUID).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithContainers(container).
		WithVolumes(volumes(ts)...)
	if fastPathOn(ts) {
		podSpec.WithContainers(fastPathContainer(ts, image, container)).
			WithVolumes(corev1ac.Volume().WithName("fastpath").WithEmptyDir(corev1ac.EmptyDirVolumeSource()))
	}
	if len(spec.Placement.NodeSelector) > 0 {
		podSpec.WithNodeSelector(spec.Placement.NodeSelector)
	}
	for i := range spec.Placement.Tolerations {
		podSpec.WithTolerations(toleration(&spec.Placement.Tolerations[i]))
	}
	if spec.Placement.Affinity != nil {
		podSpec.WithAffinity(affinity(spec.Placement.Affinity))
	}
	if spec.Relay.PriorityClassName != "" {
		podSpec.WithPriorityClassName(spec.Relay.PriorityClassName)
	}

	return appsv1ac.DaemonSet(RelayName(ts), ts.Namespace).
		WithLabels(RelayLabels(ts)).
		WithOwnerReferences(ownerReference(ts, "TurnServer")).
		WithSpec(appsv1ac.DaemonSetSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(ts))).
			WithUpdateStrategy(appsv1ac.DaemonSetUpdateStrategy().
				WithType(appsv1.RollingUpdateDaemonSetStrategyType).
				// One node at a time: clients of the other nodes keep relaying.
				WithRollingUpdate(appsv1ac.RollingUpdateDaemonSet().WithMaxUnavailable(intstr.FromInt32(1)))).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(RelayLabels(ts)).
				WithAnnotations(map[string]string{turnpikev1.AnnotationSocketHash: socketHash}).
				WithSpec(podSpec)))
}

// nodeEnv tells the relay (and the fastpath container) its node and the
// node's address, from the downward API.
func nodeEnv() []*corev1ac.EnvVarApplyConfiguration {
	return []*corev1ac.EnvVarApplyConfiguration{
		corev1ac.EnvVar().WithName("NODE_NAME").WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("spec.nodeName"))),
		corev1ac.EnvVar().WithName("HOST_IP").WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("status.hostIP"))),
	}
}

// fastPathArgs tell the relay the fast path's mode and where the agent
// listens.
func fastPathArgs(ts *turnpikev1.TurnServer) []string {
	if !fastPathOn(ts) {
		return nil
	}
	return []string{"--fast-path", string(ts.Spec.Relay.FastPath.EffectiveMode()), "--fast-path-socket", fastPathSocket}
}

func fastPathOn(ts *turnpikev1.TurnServer) bool {
	return ts.Spec.Relay.FastPath.EffectiveMode() != turnpikev1.FastPathDisabled
}

func fastPathMount() *corev1ac.VolumeMountApplyConfiguration {
	return corev1ac.VolumeMount().WithName("fastpath").WithMountPath(fastPathMountPath)
}

// fastPathContainer is `turnpike fastpath`, the one container of the pod
// with capabilities: it loads the TC program and writes its maps for the
// relay, which asks over the socket in the shared emptyDir and holds no
// capability itself. It sees relay.yaml and the node's entry (to compile
// the same peer policy), never the credentials, and listens on no port.
func fastPathContainer(ts *turnpikev1.TurnServer, image string, relay *corev1ac.ContainerApplyConfiguration) *corev1ac.ContainerApplyConfiguration {
	relayUser := relayUID
	if u := relay.SecurityContext.RunAsUser; u != nil {
		relayUser = *u // root when a port below 1024 needs NET_BIND_SERVICE
	}
	c := corev1ac.Container().
		WithName("fastpath").
		WithImage(image).
		WithCommand(relayBinary, "fastpath",
			"--config", path.Join(configMountPath, config.RelayFile),
			"--socket", fastPathSocket,
			"--relay-uid", strconv.FormatInt(relayUser, 10)).
		WithEnv(nodeEnv()...).
		WithSecurityContext(fastPathSecurityContext()).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("config").WithMountPath(configMountPath).WithReadOnly(true),
			corev1ac.VolumeMount().WithName(nodeVolumeName).WithMountPath(nodeMountPath).WithReadOnly(true),
			fastPathMount())
	if p := ts.Spec.Relay.ImagePullPolicy; p != "" {
		c.WithImagePullPolicy(p)
	}
	return c
}

// fastPathSecurityContext is root with BPF (load the program, create and
// write its maps), NET_ADMIN (attach it with TCX) and PERFMON (with it the
// verifier trusts the loader with pointer comparisons and leaves out the
// Spectre masking it adds otherwise; the program has been tested with it,
// not without), every other capability dropped. Root, because Kubernetes
// sets no ambient capabilities: a non-root process would hold none of the
// added ones in its effective set. No SYS_RESOURCE: TCX needs Linux 6.6,
// where BPF memory is charged to the cgroup and RLIMIT_MEMLOCK no longer
// applies.
func fastPathSecurityContext() *corev1ac.SecurityContextApplyConfiguration {
	return corev1ac.SecurityContext().
		WithRunAsNonRoot(false).
		WithRunAsUser(0).
		WithReadOnlyRootFilesystem(true).
		WithAllowPrivilegeEscalation(false).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL").WithAdd("BPF", "NET_ADMIN", "PERFMON"))
}

// behaviorPortName names the behaviour discovery alternate port.
const behaviorPortName = "stun-alternate"

// containerPorts declares every listener (and the behaviour discovery
// alternate port) as a hostPort, so the scheduler
// never places two relays that need the same port on one node, and the
// internal ports so they are visible to humans and PodMonitors.
func containerPorts(ts *turnpikev1.TurnServer) []*corev1ac.ContainerPortApplyConfiguration {
	var ports []*corev1ac.ContainerPortApplyConfiguration
	port := func(name string, proto corev1.Protocol, p int32) {
		ports = append(ports, corev1ac.ContainerPort().
			WithName(name).WithProtocol(proto).WithContainerPort(p).WithHostPort(p))
	}
	for _, l := range ts.Spec.Listeners {
		proto := corev1.ProtocolTCP
		if config.Protocol(l.Protocol).Transport() == "udp" {
			proto = corev1.ProtocolUDP
		}
		port(l.Name, proto, l.Port)
	}
	if bd := ts.Spec.BehaviorDiscovery; bd != nil {
		port(behaviorPortName, corev1.ProtocolUDP, bd.AlternatePort)
	}
	port("metrics", corev1.ProtocolTCP, ts.Spec.MetricsPort)
	if ts.Spec.HealthPort != ts.Spec.MetricsPort {
		port("health", corev1.ProtocolTCP, ts.Spec.HealthPort)
	}
	return ports
}

func httpProbe(path string, port int32, failureThreshold int32) *corev1ac.ProbeApplyConfiguration {
	return corev1ac.Probe().
		WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromInt32(port))).
		WithPeriodSeconds(5).
		WithFailureThreshold(failureThreshold)
}

// relaySecurityContext is the restricted profile, non-root with every
// capability dropped, unless the relay needs NET_BIND_SERVICE for a port
// below 1024 (the eBPF fast path's capabilities belong to the fastpath
// container, never to the relay). A relay that needs a capability runs as
// UID 0: Kubernetes hands added
// capabilities to the container, but when the runtime execs the relay binary
// the kernel keeps them in the permitted and effective sets only of a root
// process (or of a binary with file capabilities, which the image has not).
// A non-root process gets no effective capabilities without ambient
// capabilities, which Kubernetes does not set. Every other capability stays
// dropped, the root file system read-only and privilege escalation off.
func relaySecurityContext(ts *turnpikev1.TurnServer) *corev1ac.SecurityContextApplyConfiguration {
	caps := corev1ac.Capabilities().WithDrop("ALL")
	if needsPrivilegedPort(ts) {
		caps.WithAdd("NET_BIND_SERVICE")
	}
	sc := corev1ac.SecurityContext().WithRunAsNonRoot(true)
	if len(caps.Add) > 0 {
		// Overrides the pod's runAsNonRoot and runAsUser for this container.
		sc.WithRunAsNonRoot(false).WithRunAsUser(0)
	}
	return sc.
		WithReadOnlyRootFilesystem(true).
		WithAllowPrivilegeEscalation(false).
		WithCapabilities(caps)
}

func needsPrivilegedPort(ts *turnpikev1.TurnServer) bool {
	for _, c := range portClaims(ts) {
		if c.min < 1024 {
			return true
		}
	}
	return false
}

// TLSListeners are the listeners that mount a certificate, sorted by name.
func TLSListeners(ts *turnpikev1.TurnServer) []turnpikev1.Listener {
	var out []turnpikev1.Listener
	for _, l := range ts.Spec.Listeners {
		if l.TLSSecretRef != nil {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func volumes(ts *turnpikev1.TurnServer) []*corev1ac.VolumeApplyConfiguration {
	v := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName("config").
			WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(RelayName(ts))),
		corev1ac.Volume().WithName("credentials").
			WithSecret(corev1ac.SecretVolumeSource().WithSecretName(CredentialSecretName(ts))),
		corev1ac.Volume().WithName(nodeVolumeName).
			WithDownwardAPI(corev1ac.DownwardAPIVolumeSource().WithItems(
				corev1ac.DownwardAPIVolumeFile().WithPath(nodeAddressesFile).
					WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").
						WithFieldPath("metadata.annotations['" + turnpikev1.AnnotationNodeAddresses + "']")))),
	}
	for _, l := range TLSListeners(ts) {
		v = append(v, corev1ac.Volume().WithName("tls-"+l.Name).
			WithSecret(corev1ac.SecretVolumeSource().WithSecretName(l.TLSSecretRef.Name)))
	}
	return v
}

func volumeMounts(ts *turnpikev1.TurnServer) []*corev1ac.VolumeMountApplyConfiguration {
	m := []*corev1ac.VolumeMountApplyConfiguration{
		corev1ac.VolumeMount().WithName("config").WithMountPath(configMountPath).WithReadOnly(true),
		corev1ac.VolumeMount().WithName("credentials").WithMountPath(credentialsMountPath).WithReadOnly(true),
		corev1ac.VolumeMount().WithName(nodeVolumeName).WithMountPath(nodeMountPath).WithReadOnly(true),
	}
	for _, l := range TLSListeners(ts) {
		m = append(m, corev1ac.VolumeMount().WithName("tls-"+l.Name).
			WithMountPath(path.Join(tlsMountRoot, l.Name)).WithReadOnly(true))
	}
	return m
}

// toleration and affinity copy user-supplied scheduling fields into apply
// configurations. Both types share the API's JSON form, so a JSON round trip
// is an exact copy that cannot miss a field added in a later Kubernetes.
func toleration(t *corev1.Toleration) *corev1ac.TolerationApplyConfiguration {
	out := &corev1ac.TolerationApplyConfiguration{}
	mustCopyJSON(t, out)
	return out
}

func affinity(a *corev1.Affinity) *corev1ac.AffinityApplyConfiguration {
	out := &corev1ac.AffinityApplyConfiguration{}
	mustCopyJSON(a, out)
	return out
}

func mustCopyJSON(from, to any) {
	b, err := json.Marshal(from)
	if err == nil {
		err = json.Unmarshal(b, to)
	}
	if err != nil {
		// Both sides are generated API types of the same schema.
		panic(fmt.Sprintf("copying %T to %T: %v", from, to, err))
	}
}
