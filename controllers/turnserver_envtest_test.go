package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

// loadSample reads a manifest from config/samples.
func loadSample(t *testing.T, file string, into client.Object) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// relayObjects are a TurnServer's generated objects as they are in the API server.
type relayObjects struct {
	sa      corev1.ServiceAccount
	cm      corev1.ConfigMap
	secret  corev1.Secret
	svc     corev1.Service
	ds      appsv1.DaemonSet
	relay   *config.Relay
	secrets *config.Credentials
}

func getRelayObjects(ts *turnpikev1.TurnServer) (*relayObjects, error) {
	ctx := context.Background()
	o := &relayObjects{}
	key := client.ObjectKey{Namespace: ts.Namespace, Name: ts.Name + "-relay"}
	for _, obj := range []client.Object{&o.sa, &o.cm, &o.svc, &o.ds} {
		if err := env.Client.Get(ctx, key, obj); err != nil {
			return nil, fmt.Errorf("%T: %w", obj, err)
		}
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ts.Namespace, Name: ts.Name + "-relay-credentials"}, &o.secret); err != nil {
		return nil, err
	}
	var err error
	if o.relay, err = config.ParseRelay([]byte(o.cm.Data[config.RelayFile])); err != nil {
		return nil, err
	}
	if o.secrets, err = config.ParseCredentials(o.secret.Data[config.CredentialsFile]); err != nil {
		return nil, err
	}
	return o, nil
}

func getTurnServer(t *testing.T, ts *turnpikev1.TurnServer) *turnpikev1.TurnServer {
	t.Helper()
	cur := &turnpikev1.TurnServer{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(ts), cur); err != nil {
		t.Fatal(err)
	}
	return cur
}

func condition(ts *turnpikev1.TurnServer, typ string) *metav1.Condition {
	return meta.FindStatusCondition(ts.Status.Conditions, typ)
}

// expectCondition checks a condition's status and reason and that it describes the current generation.
func expectCondition(ts *turnpikev1.TurnServer, typ string, status metav1.ConditionStatus, reason string) error {
	c := condition(ts, typ)
	switch {
	case c == nil:
		return fmt.Errorf("no %s condition", typ)
	case c.Status != status || c.Reason != reason:
		return fmt.Errorf("%s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	case c.ObservedGeneration != ts.Generation:
		return fmt.Errorf("%s describes generation %d, object is at %d", typ, c.ObservedGeneration, ts.Generation)
	}
	return nil
}

// setDaemonSetStatus plays the DaemonSet controller.
func setDaemonSetStatus(t *testing.T, ds *appsv1.DaemonSet, desired, ready, updated int32) {
	t.Helper()
	ctx := context.Background()
	cur := &appsv1.DaemonSet{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ds), cur); err != nil {
		t.Fatal(err)
	}
	cur.Status = appsv1.DaemonSetStatus{
		ObservedGeneration: cur.Generation, DesiredNumberScheduled: desired, CurrentNumberScheduled: desired,
		NumberReady: ready, UpdatedNumberScheduled: updated, NumberAvailable: ready,
	}
	if err := env.Client.Status().Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
}

// createRelayPod plays the kubelet: a relay pod on node, ready or not.
func createRelayPod(t *testing.T, ts *turnpikev1.TurnServer, node string, ready bool) {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: ts.Name + "-relay-" + node, Namespace: ts.Namespace, Labels: render.RelayLabels(ts)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "relay", Image: "x"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// The operator annotates the pod meanwhile, so the status is set on a
	// fresh copy.
	setPodReady(t, ts, node, ready)
}

// nodeEntryOf reads the node addresses the operator wrote on the relay pod
// of node, which its relay reads as addresses.nodeFile.
func nodeEntryOf(ts *turnpikev1.TurnServer, node string) (string, error) {
	pod := &corev1.Pod{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ts.Namespace, Name: ts.Name + "-relay-" + node}, pod); err != nil {
		return "", err
	}
	entry, err := config.ParseNodeAddresses([]byte(pod.Annotations[turnpikev1.AnnotationNodeAddresses]))
	return fmt.Sprint(entry), err
}

// TestSampleTurnServer applies config/samples' TurnServer and checks every
// generated object and the status, as a user would see them.
func TestSampleTurnServer(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "sample")
	relayNode := map[string]string{"kubernetes.io/os": "linux", "turnpike.dev/relay": "true"}
	newNode(t, "sample-a", relayNode, externalIP("203.0.113.10"), internalIP("10.0.0.10"))
	newNode(t, "sample-b", relayNode, internalIP("10.0.0.11"))
	newNode(t, "sample-other", map[string]string{"kubernetes.io/os": "linux"}, externalIP("203.0.113.12"))

	ts := &turnpikev1.TurnServer{}
	loadSample(t, "turnpike_v1alpha1_turnserver.yaml", ts)
	ts.Namespace = ns
	tlsSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "turn-example-com-tls", Namespace: ns},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": []byte("cert"), "tls.key": []byte("key")},
	}
	if err := env.Client.Create(ctx, tlsSecret); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}

	var objs *relayObjects
	eventually(t, "generated objects", func() (err error) { objs, err = getRelayObjects(ts); return err })
	ts = getTurnServer(t, ts)

	for _, o := range []client.Object{&objs.sa, &objs.cm, &objs.secret, &objs.svc, &objs.ds} {
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].UID != ts.UID || refs[0].Controller == nil || !*refs[0].Controller {
			t.Errorf("%T %s: owner references %+v, want the TurnServer as controller", o, o.GetName(), refs)
		}
		if o.GetLabels()[turnpikev1.LabelTurnServer] != ts.Name || o.GetLabels()["app.kubernetes.io/managed-by"] != "turnpike-operator" {
			t.Errorf("%T %s: labels %v", o, o.GetName(), o.GetLabels())
		}
	}
	if objs.sa.AutomountServiceAccountToken == nil || *objs.sa.AutomountServiceAccountToken {
		t.Error("ServiceAccount mounts a token")
	}

	// relay.yaml: the relay must be able to parse what the operator renders.
	r := objs.relay
	if r.Realm != "turn.example.com" || len(r.Listeners) != 3 || r.RelayPortRange != (config.PortRange{Min: 49152, Max: 65535}) {
		t.Errorf("relay.yaml: realm %q, %d listeners, range %v", r.Realm, len(r.Listeners), r.RelayPortRange)
	}
	if tls := r.Listeners[2]; tls.CertFile != "/etc/turnpike/tls/tls/tls.crt" || tls.KeyFile != "/etc/turnpike/tls/tls/tls.key" {
		t.Errorf("TLS listener files: %+v", tls)
	}
	if r.Quotas.BandwidthPerAllocation != 4<<20 || r.Quotas.AllocationsPerUser != 20 || !slices.Equal(r.PeerPolicy.Allow, []string{"10.20.0.0/16"}) {
		t.Errorf("quotas %+v, peer policy %+v", r.Quotas, r.PeerPolicy)
	}
	if len(r.Addresses.Nodes) != 0 || r.Addresses.NodeFile != "/etc/turnpike/node/addresses.json" {
		t.Errorf("relay.yaml nodes = %v, node file %q: want none and the pod's annotation", r.Addresses.Nodes, r.Addresses.NodeFile)
	}
	if r.DrainGracePeriod.Seconds() != 60 {
		t.Errorf("drain grace period %v", r.DrainGracePeriod)
	}
	if objs.secrets.Version != config.Version {
		t.Errorf("credentials.yaml version %q", objs.secrets.Version)
	}

	// The DaemonSet.
	pod := objs.ds.Spec.Template.Spec
	c := pod.Containers[0]
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet || pod.ServiceAccountName != "example-relay" ||
		pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("pod spec: hostNetwork %v dnsPolicy %v sa %q automount %v", pod.HostNetwork, pod.DNSPolicy, pod.ServiceAccountName, pod.AutomountServiceAccountToken)
	}
	if c.Image != "registry.example/turnpike:test" {
		t.Errorf("image %q: want the operator's relay image", c.Image)
	}
	if *pod.TerminationGracePeriodSeconds != 65 {
		t.Errorf("terminationGracePeriodSeconds %d, want drain 60s + 5s", *pod.TerminationGracePeriodSeconds)
	}
	if pod.NodeSelector["turnpike.dev/relay"] != "true" {
		t.Errorf("node selector %v", pod.NodeSelector)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if env["NODE_NAME"] != "spec.nodeName" || env["HOST_IP"] != "status.hostIP" {
		t.Errorf("env %v", env)
	}
	var ports []string
	for _, p := range c.Ports {
		ports = append(ports, fmt.Sprintf("%s/%s/%d/%d", p.Name, p.Protocol, p.ContainerPort, p.HostPort))
	}
	want := []string{"udp/UDP/3478/3478", "tcp/TCP/3478/3478", "tls/TCP/5349/5349", "metrics/TCP/9641/9641", "health/TCP/9642/9642"}
	if !slices.Equal(ports, want) {
		t.Errorf("ports %v, want %v", ports, want)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.IntValue() != 9642 ||
		c.LivenessProbe.HTTPGet.Path != "/livez" {
		t.Errorf("probes: %+v %+v", c.ReadinessProbe.HTTPGet, c.LivenessProbe.HTTPGet)
	}
	sc := c.SecurityContext
	if !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("security context %+v / pod %+v", sc, pod.SecurityContext)
	}
	if objs.ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("update strategy %+v", objs.ds.Spec.UpdateStrategy)
	}
	if objs.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash] != r.SocketHash() {
		t.Errorf("socket hash annotation %q, relay.yaml's is %q", objs.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash], r.SocketHash())
	}
	var mounts []string
	for _, m := range c.VolumeMounts {
		mounts = append(mounts, m.MountPath)
		if m.SubPath != "" || !m.ReadOnly {
			t.Errorf("mount %s: subPath %q readOnly %v", m.Name, m.SubPath, m.ReadOnly)
		}
	}
	if !slices.Equal(mounts, []string{"/etc/turnpike/config", "/etc/turnpike/credentials", "/etc/turnpike/node", "/etc/turnpike/tls/tls", "/run/turnpike"}) {
		t.Errorf("mounts %v", mounts)
	}

	// The metrics Service.
	if objs.svc.Spec.ClusterIP != corev1.ClusterIPNone || objs.svc.Spec.Ports[0].Port != 9641 {
		t.Errorf("service: clusterIP %q ports %+v", objs.svc.Spec.ClusterIP, objs.svc.Spec.Ports)
	}

	// Status before any relay runs: nodes known, sample-b flagged, not ready.
	eventually(t, "initial status", func() error {
		ts = getTurnServer(t, ts)
		if ts.Status.ObservedGeneration != ts.Generation {
			return fmt.Errorf("observedGeneration %d", ts.Status.ObservedGeneration)
		}
		got := fmt.Sprint(ts.Status.AttentionNodes)
		want := "[{sample-a [RelayNotReady] [203.0.113.10] ExternalIP} {sample-b [RelayNotReady AddressNotPublic] [10.0.0.11] InternalIP}]"
		if ts.Status.NodesNeedingAttention != 2 || got != want {
			return fmt.Errorf("%d nodes needing attention %s, want 2 %s", ts.Status.NodesNeedingAttention, got, want)
		}
		if err := expectCondition(ts, turnpikev1.ConditionDegraded, metav1.ConditionTrue, render.ReasonAddressNotPublic); err != nil {
			return err
		}
		return expectCondition(ts, turnpikev1.ConditionReady, metav1.ConditionFalse, render.ReasonNodesNotReady)
	})
	if !strings.Contains(condition(ts, turnpikev1.ConditionDegraded).Message, "sample-b") {
		t.Errorf("Degraded message does not name the node: %q", condition(ts, turnpikev1.ConditionDegraded).Message)
	}

	// The DaemonSet controller schedules two pods, one becomes ready.
	setDaemonSetStatus(t, &objs.ds, 2, 1, 2)
	createRelayPod(t, ts, "sample-a", true)
	createRelayPod(t, ts, "sample-b", false)
	eventually(t, "one node ready", func() error {
		ts = getTurnServer(t, ts)
		if ts.Status.NodeSummary != "1/2" || ts.Status.AddressSummary != "203.0.113.10" {
			return fmt.Errorf("summary %q addresses %q", ts.Status.NodeSummary, ts.Status.AddressSummary)
		}
		// Each relay pod carries its own node's entry.
		for node, want := range map[string]string{"sample-a": "&{[203.0.113.10] ExternalIP}", "sample-b": "&{[10.0.0.11] InternalIP}"} {
			if got, err := nodeEntryOf(ts, node); err != nil || got != want {
				return fmt.Errorf("pod on %s: node entry %s (%v), want %s", node, got, err, want)
			}
		}
		return expectCondition(ts, turnpikev1.ConditionProgressing, metav1.ConditionFalse, render.ReasonRolledOut)
	})
	wantURLs := []string{
		"turn:203.0.113.10:3478?transport=tcp",
		"turn:203.0.113.10:3478?transport=udp",
		"turns:203.0.113.10:5349?transport=tcp",
	}
	if !slices.Equal(ts.Status.URLs, wantURLs) {
		t.Errorf("urls %v, want %v", ts.Status.URLs, wantURLs)
	}

	// Both ready.
	setDaemonSetStatus(t, &objs.ds, 2, 2, 2)
	eventually(t, "all nodes ready", func() error {
		ts = getTurnServer(t, ts)
		return expectCondition(ts, turnpikev1.ConditionReady, metav1.ConditionTrue, render.ReasonAllNodesReady)
	})
}

// minimalTurnServer is a TurnServer on the nodes labelled suite=<label>.
func minimalTurnServer(ns, name, label string, port int32) *turnpikev1.TurnServer {
	return &turnpikev1.TurnServer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: turnpikev1.TurnServerSpec{
			Realm:     "example.org",
			Listeners: []turnpikev1.Listener{{Name: "udp", Protocol: turnpikev1.ProtocolUDP, Port: port}},
			Placement: turnpikev1.Placement{NodeSelector: map[string]string{"suite": label}},
		},
	}
}

func update(t *testing.T, ts *turnpikev1.TurnServer, change func(*turnpikev1.TurnServer)) {
	t.Helper()
	eventually(t, "update TurnServer", func() error {
		cur := getTurnServer(t, ts)
		change(cur)
		return env.Client.Update(context.Background(), cur)
	})
}

// TestOnlySocketChangesRollPods changes a hot-reloadable field and a socket
// field and checks which one changes the pod template's hash.
func TestOnlySocketChangesRollPods(t *testing.T) {
	ns := newNamespace(t, "socket-hash")
	newNode(t, "hash-a", map[string]string{"suite": "hash"}, externalIP("198.51.100.1"))
	ts := minimalTurnServer(ns, "hash", "hash", 3478)
	if err := env.Client.Create(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	var before *relayObjects
	eventually(t, "objects", func() (err error) { before, err = getRelayObjects(ts); return err })
	hash := before.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash]

	update(t, ts, func(ts *turnpikev1.TurnServer) {
		ts.Spec.Realm = "changed.example.org"
		ts.Spec.PeerPolicy.Deny = []turnpikev1.CIDR{"192.0.2.0/24"}
	})
	eventually(t, "realm and policy in relay.yaml", func() error {
		o, err := getRelayObjects(ts)
		if err != nil {
			return err
		}
		if o.relay.Realm != "changed.example.org" || len(o.relay.PeerPolicy.Deny) != 1 {
			return fmt.Errorf("relay.yaml realm %q deny %v", o.relay.Realm, o.relay.PeerPolicy.Deny)
		}
		if got := o.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash]; got != hash {
			return fmt.Errorf("socket hash changed from %s to %s for a hot-reloadable change", hash, got)
		}
		return nil
	})

	update(t, ts, func(ts *turnpikev1.TurnServer) { ts.Spec.Listeners[0].Port = 3479 })
	eventually(t, "new hash for a new port", func() error {
		o, err := getRelayObjects(ts)
		if err != nil {
			return err
		}
		if got := o.ds.Spec.Template.Annotations[turnpikev1.AnnotationSocketHash]; got == hash {
			return fmt.Errorf("socket hash unchanged after a listener port change")
		}
		if o.ds.Spec.Template.Spec.Containers[0].Ports[0].HostPort != 3479 {
			return fmt.Errorf("hostPort not updated")
		}
		return nil
	})
}

// TestFastPathToggles turns the eBPF fast path from its default (Auto) to
// Disabled and to Enabled: relay.yaml follows, the fastpath container
// (root, BPF, NET_ADMIN, PERFMON) comes and goes with server-side apply,
// and the relay container stays non-root with no capability throughout.
func TestFastPathToggles(t *testing.T) {
	ns := newNamespace(t, "fast-path")
	newNode(t, "fast-a", map[string]string{"suite": "fast"}, externalIP("198.51.100.2"))
	ts := minimalTurnServer(ns, "fast", "fast", 3478)
	if err := env.Client.Create(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	check := func(what string, mode config.FastPathMode, interfaces []string) {
		t.Helper()
		eventually(t, what, func() error {
			o, err := getRelayObjects(ts)
			if err != nil {
				return err
			}
			if o.relay.FastPath.Mode != "" || o.relay.FastPath.Socket != "" || !slices.Equal(o.relay.FastPath.Interfaces, interfaces) {
				return fmt.Errorf("relay.yaml fastPath %+v", o.relay.FastPath)
			}
			containers := o.ds.Spec.Template.Spec.Containers
			if slices.Contains(containers[0].Command, string(mode)) != (mode != config.FastPathDisabled) {
				return fmt.Errorf("relay command %q, want the fast path %s", containers[0].Command, mode)
			}
			sc := containers[0].SecurityContext
			if sc.RunAsUser != nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || len(sc.Capabilities.Add) != 0 {
				return fmt.Errorf("relay runAsUser %v runAsNonRoot %v add %v", sc.RunAsUser, sc.RunAsNonRoot, sc.Capabilities.Add)
			}
			if want := 1 + btoi(mode != config.FastPathDisabled); len(containers) != want {
				return fmt.Errorf("%d containers, want %d", len(containers), want)
			}
			if mode != config.FastPathDisabled {
				fp := containers[1].SecurityContext
				if fp.RunAsUser == nil || *fp.RunAsUser != 0 || !slices.Equal(fp.Capabilities.Add, []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON"}) {
					return fmt.Errorf("fastpath runAsUser %v add %v", fp.RunAsUser, fp.Capabilities.Add)
				}
			}
			return nil
		})
	}
	check("fast path Auto by default, through the fastpath container", config.FastPathAuto, nil)
	update(t, ts, func(ts *turnpikev1.TurnServer) {
		ts.Spec.Relay.FastPath = turnpikev1.RelayFastPath{Mode: turnpikev1.FastPathDisabled}
	})
	check("fast path Disabled, no fastpath container", config.FastPathDisabled, nil)
	update(t, ts, func(ts *turnpikev1.TurnServer) {
		ts.Spec.Relay.FastPath = turnpikev1.RelayFastPath{Mode: turnpikev1.FastPathEnabled, Interfaces: []string{"eth0"}}
	})
	check("fast path Enabled on eth0", config.FastPathEnabled, []string{"eth0"})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestNodeEventsUpdateStatus adds, readdresses, relabels and deletes nodes.
func TestNodeEventsUpdateStatus(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "node-events")
	label := map[string]string{"suite": "nodes"}
	newNode(t, "nodes-a", label, externalIP("198.51.100.10"))
	ts := minimalTurnServer(ns, "nodes", "nodes", 3478)
	ts.Spec.ExternalAddresses = []turnpikev1.NodeExternalAddress{{NodeName: "nodes-c", Addresses: []turnpikev1.IPAddress{"192.0.2.33"}}}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	// No relay pods: every node needs attention, so status.attentionNodes
	// lists them all with their addresses.
	nodesOf := func(want string) func() error {
		return func() error {
			cur := getTurnServer(t, ts)
			var got []string
			for _, n := range cur.Status.AttentionNodes {
				got = append(got, fmt.Sprintf("%s=%s(%s)", n.Name, strings.Join(n.Addresses, "+"), n.Source))
			}
			o, err := getRelayObjects(ts)
			if err != nil {
				return err
			}
			if strings.Join(got, " ") != want {
				return fmt.Errorf("status nodes %v, want %s", got, want)
			}
			if len(o.relay.Addresses.Nodes) != 0 {
				return fmt.Errorf("relay.yaml lists %d nodes", len(o.relay.Addresses.Nodes))
			}
			return nil
		}
	}
	eventually(t, "first node", nodesOf("nodes-a=198.51.100.10(ExternalIP)"))

	b := newNode(t, "nodes-b", label, internalIP("10.1.0.2"), internalIP("fd00::2"))
	eventually(t, "node added", nodesOf("nodes-a=198.51.100.10(ExternalIP) nodes-b=10.1.0.2+fd00::2(InternalIP)"))

	b.Annotations = map[string]string{turnpikev1.AnnotationExternalIP: "2001:db8::2, 192.0.2.2"}
	if err := env.Client.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "annotation wins over InternalIP", nodesOf("nodes-a=198.51.100.10(ExternalIP) nodes-b=192.0.2.2+2001:db8::2(Annotation)"))

	newNode(t, "nodes-c", label, externalIP("198.51.100.30"))
	eventually(t, "spec wins over ExternalIP", nodesOf("nodes-a=198.51.100.10(ExternalIP) nodes-b=192.0.2.2+2001:db8::2(Annotation) nodes-c=192.0.2.33(Spec)"))

	b.Labels = map[string]string{"suite": "elsewhere"}
	if err := env.Client.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relabelled node leaves", nodesOf("nodes-a=198.51.100.10(ExternalIP) nodes-c=192.0.2.33(Spec)"))

	if err := env.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "nodes-a"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted node leaves", nodesOf("nodes-c=192.0.2.33(Spec)"))
}

// TestPortConflict places two TurnServers on one node with the same ports.
func TestPortConflict(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "conflict")
	newNode(t, "conflict-a", map[string]string{"suite": "conflict"}, externalIP("198.51.100.40"))
	first := minimalTurnServer(ns, "first", "conflict", 3478)
	if err := env.Client.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	eventually(t, "first rolled out", func() error { _, err := getRelayObjects(first); return err })

	second := minimalTurnServer(ns, "second", "conflict", 3478)
	if err := env.Client.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second refused", func() error {
		cur := getTurnServer(t, second)
		if err := expectCondition(cur, turnpikev1.ConditionReady, metav1.ConditionFalse, render.ReasonPortConflict); err != nil {
			return err
		}
		if msg := condition(cur, turnpikev1.ConditionReady).Message; !strings.Contains(msg, "conflict/first") || !strings.Contains(msg, "conflict-a") {
			return fmt.Errorf("message does not name the other TurnServer and the node: %q", msg)
		}
		return nil
	})
	ds := &appsv1.DaemonSet{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "second-relay"}, ds); err == nil {
		t.Fatal("the newer TurnServer got a DaemonSet despite the conflict")
	}
	cur := getTurnServer(t, first)
	if c := condition(cur, turnpikev1.ConditionReady); c != nil && c.Reason == render.ReasonPortConflict {
		t.Fatalf("the older TurnServer is blocked: %s", c.Message)
	}

	// Moving every port of the second one resolves the conflict.
	update(t, second, func(ts *turnpikev1.TurnServer) {
		ts.Spec.Listeners[0].Port = 3480
		ts.Spec.MetricsPort, ts.Spec.HealthPort = 9741, 9742
		ts.Spec.RelayPortRange = turnpikev1.PortRange{Min: 40000, Max: 40999}
	})
	eventually(t, "second rolled out", func() error {
		if _, err := getRelayObjects(second); err != nil {
			return err
		}
		return expectCondition(getTurnServer(t, second), turnpikev1.ConditionDegraded, metav1.ConditionFalse, render.ReasonAsExpected)
	})
}

// TestResyncWritesNothing reconciles an unchanged TurnServer again and
// counts the writes sent to the API server.
func TestResyncWritesNothing(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "resync")
	newNode(t, "resync-a", map[string]string{"suite": "resync"}, externalIP("198.51.100.50"))
	ts := minimalTurnServer(ns, "resync", "resync", 3478)
	ts.Spec.Placement.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "media", Effect: corev1.TaintEffectNoSchedule}}
	ts.Spec.Relay.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resourceMust("0.5")}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "objects", func() error { _, err := getRelayObjects(ts); return err })
	req := requestFor(ts)

	// Once the cache has caught up with our own writes, a resync writes nothing.
	eventually(t, "a reconcile without writes", func() error {
		before := writes.n.Load()
		if _, err := reconciler.Reconcile(ctx, req); err != nil {
			return err
		}
		if n := writes.n.Load() - before; n != 0 {
			return fmt.Errorf("%d writes", n)
		}
		return nil
	})
	before := writes.n.Load()
	for range 5 {
		if _, err := reconciler.Reconcile(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if n := writes.n.Load() - before; n != 0 {
		t.Fatalf("5 resyncs of an unchanged TurnServer made %d writes, want 0", n)
	}

	// Someone edits a field the operator owns: the next reconcile puts it back.
	ds := &appsv1.DaemonSet{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "resync-relay"}, ds); err != nil {
		t.Fatal(err)
	}
	ds.Spec.Template.Spec.HostNetwork = false
	if err := env.Client.Update(ctx, ds); err != nil {
		t.Fatal(err)
	}
	eventually(t, "drift corrected", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ds), ds); err != nil {
			return err
		}
		if !ds.Spec.Template.Spec.HostNetwork {
			return fmt.Errorf("hostNetwork still false")
		}
		return nil
	})
}

func resourceMust(s string) resource.Quantity { return resource.MustParse(s) }

// TestStatusWriteFromStaleCopy writes a TurnServer's status from a copy
// that is a version behind, as a reconcile working from a cache a moment old
// does. The write goes through (server-side apply carries no resourceVersion)
// instead of failing with a conflict and being retried with the full status.
func TestStatusWriteFromStaleCopy(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "stale-status")
	ts := minimalTurnServer(ns, "stale", "stale-none", 3478)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	var stale *turnpikev1.TurnServer
	eventually(t, "first status", func() error {
		stale = getTurnServer(t, ts)
		if stale.Status.ObservedGeneration != stale.Generation {
			return fmt.Errorf("no status for generation %d", stale.Generation)
		}
		return nil
	})
	update(t, ts, func(ts *turnpikev1.TurnServer) { ts.Spec.Realm = "other.example.org" })
	eventually(t, "the controller is done with the new generation", func() error {
		cur := getTurnServer(t, ts)
		if cur.Status.ObservedGeneration != cur.Generation {
			return fmt.Errorf("status describes generation %d of %d", cur.Status.ObservedGeneration, cur.Generation)
		}
		return nil
	})

	st := *stale.Status.DeepCopy()
	st.NodeSummary = "7/7"
	if err := reconciler.updateStatus(ctx, stale, st); err != nil {
		t.Fatalf("status write from a stale copy: %v", err)
	}
	if got := getTurnServer(t, ts).Status.NodeSummary; got != "7/7" {
		t.Fatalf("nodeSummary %q after the write", got)
	}
}

// TestApplyFailureShownInStatus makes the API server refuse the relay
// ConfigMap (a ResourceQuota allows none): the TurnServer says so in its
// Ready and Degraded conditions, with the API server's message, and once
// the quota is gone the retry succeeds.
func TestApplyFailureShownInStatus(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "apply-fails")
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "no-configmaps", Namespace: ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceConfigMaps: resourceMust("0")}},
	}
	if err := env.Client.Create(ctx, quota); err != nil {
		t.Fatal(err)
	}
	// Play the quota controller, which envtest does not run.
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{corev1.ResourceConfigMaps: resourceMust("0")}}
	if err := env.Client.Status().Update(ctx, quota); err != nil {
		t.Fatal(err)
	}
	ts := minimalTurnServer(ns, "refused", "apply-fails-none", 3478)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "failure in the status", func() error {
		cur := getTurnServer(t, ts)
		if err := expectCondition(cur, turnpikev1.ConditionDegraded, metav1.ConditionTrue, render.ReasonApplyFailed); err != nil {
			return err
		}
		if err := expectCondition(cur, turnpikev1.ConditionReady, metav1.ConditionFalse, render.ReasonApplyFailed); err != nil {
			return err
		}
		for _, typ := range []string{turnpikev1.ConditionDegraded, turnpikev1.ConditionReady} {
			if msg := condition(cur, typ).Message; !strings.Contains(msg, "ConfigMap") || !strings.Contains(msg, "quota") {
				return fmt.Errorf("%s message does not say what failed: %q", typ, msg)
			}
		}
		return nil
	})

	eventually(t, "an ApplyFailed Event", func() error {
		_, err := recordedEvents(ns, ts.Name, corev1.EventTypeWarning, render.ReasonApplyFailed, "quota")
		return err
	})

	if err := env.Client.Delete(ctx, quota); err != nil {
		t.Fatal(err)
	}
	eventually(t, "retried", func() error {
		if _, err := getRelayObjects(ts); err != nil {
			return err
		}
		return expectCondition(getTurnServer(t, ts), turnpikev1.ConditionDegraded, metav1.ConditionFalse, render.ReasonAsExpected)
	})
	// Every failed pass until then was the same failure: one Event.
	if evs, err := recordedEvents(ns, ts.Name, corev1.EventTypeWarning, render.ReasonApplyFailed, ""); err != nil || len(evs) != 1 {
		t.Errorf("ApplyFailed Events: %d, %v; want 1", len(evs), err)
	}
}

// recordedEvents lists the events.k8s.io Events in ns regarding the object
// name, of type typ and reason, whose note contains noteHas, and fails when
// there are none.
func recordedEvents(ns, name, typ, reason, noteHas string) ([]eventsv1.Event, error) {
	var list eventsv1.EventList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Type == typ && e.Reason == reason && strings.Contains(e.Note, noteHas) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s Event %s on %s/%s with %q among %d", typ, reason, ns, name, noteHas, len(list.Items))
	}
	return out, nil
}

// TestStatusFromAnOlderOperator: an older operator wrote the status with a
// merge patch (field manager operation Update). The status is now applied,
// and a field the new status leaves out must go, not stay as the old writer
// left it: here URLs of a relay that no longer serves.
func TestStatusFromAnOlderOperator(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "old-status")
	ts := minimalTurnServer(ns, "relay", "old-status-none", 3478)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "status", func() error {
		if cur := getTurnServer(t, ts); cur.Status.ObservedGeneration != cur.Generation {
			return fmt.Errorf("no status yet")
		}
		return nil
	})
	old := getTurnServer(t, ts)
	patch := client.MergeFrom(old.DeepCopy())
	old.Status.URLs = []string{"turn:192.0.2.1:3478?transport=udp"}
	if err := env.Client.Status().Patch(ctx, old, patch, client.FieldOwner("turnpike")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stale URL removed", func() error {
		if _, err := reconciler.Reconcile(ctx, requestFor(ts)); err != nil {
			return err
		}
		if urls := getTurnServer(t, ts).Status.URLs; len(urls) != 0 {
			return fmt.Errorf("urls %v", urls)
		}
		return nil
	})
}

// TestUpgradeKeepsNodeListUntilRolledOut: relays of an earlier release read
// every node's entry from relay.yaml and refuse one that names the node file.
// While they may run (relay.yaml in the earlier format, the DaemonSet not yet
// rolled out with the node volume), relay.yaml keeps the list; once the
// rollout is done it names the node file, and keeps doing so.
func TestUpgradeKeepsNodeListUntilRolledOut(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "upgrade")
	newNode(t, "upgrade-a", map[string]string{"suite": "upgrade"}, externalIP("198.51.100.80"))
	ts := minimalTurnServer(ns, "relay", "upgrade", 3478)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	format := func(want string) func() error {
		return func() error {
			o, err := getRelayObjects(ts)
			if err != nil {
				return err
			}
			got := "node file"
			if o.relay.Addresses.NodeFile == "" {
				got = fmt.Sprintf("nodes %v", o.relay.Addresses.Nodes)
			}
			if got != want {
				return fmt.Errorf("relay.yaml has %s, want %s", got, want)
			}
			return nil
		}
	}
	eventually(t, "a new TurnServer names the node file", format("node file"))

	// What the earlier release left: relay.yaml listing every node. A
	// reconcile that read the cache before this write may still apply over
	// it (the earlier operator is gone before this one starts, so a real
	// upgrade has no such race): write until the list stays.
	const listed = "nodes map[upgrade-a:{[198.51.100.80] ExternalIP}]"
	eventually(t, "write the earlier relay.yaml, and the list is kept while the DaemonSet rolls out", func() error {
		o, err := getRelayObjects(ts)
		if err != nil {
			return err
		}
		if o.relay.Addresses.NodeFile != "" {
			o.relay.Addresses.NodeFile = ""
			o.relay.Addresses.Nodes = map[string]config.NodeAddresses{"upgrade-a": {External: []string{"198.51.100.80"}, Source: "ExternalIP"}}
			data, err := config.Marshal(o.relay)
			if err != nil {
				return err
			}
			o.cm.Data[config.RelayFile] = string(data)
			if err := env.Client.Update(ctx, &o.cm); err != nil {
				return err
			}
		}
		time.Sleep(300 * time.Millisecond)
		return format(listed)()
	})
	// A reconcile that starts from the earlier relay.yaml keeps the list.
	if _, err := reconciler.Reconcile(ctx, requestFor(ts)); err != nil {
		t.Fatal(err)
	}
	if err := format(listed)(); err != nil {
		t.Fatal(err)
	}

	o, err := getRelayObjects(ts)
	if err != nil {
		t.Fatal(err)
	}
	setDaemonSetStatus(t, &o.ds, 1, 1, 1)
	eventually(t, "rolled out: the node file", format("node file"))

	setDaemonSetStatus(t, &o.ds, 1, 1, 0) // a later rollout
	if _, err := reconciler.Reconcile(ctx, requestFor(ts)); err != nil {
		t.Fatal(err)
	}
	if err := format("node file")(); err != nil {
		t.Fatalf("a later rollout: %v", err)
	}
}

// TestTLSSecretFollowed: a listener names a TLS Secret that is missing,
// then incomplete, then complete. The operator caches no users' Secrets,
// only their metadata; each change still reaches the Degraded condition.
func TestTLSSecretFollowed(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "tls-followed")
	ts := minimalTurnServer(ns, "relay", "tls-followed-none", 3478)
	ts.Spec.Listeners = append(ts.Spec.Listeners, turnpikev1.Listener{Name: "tls", Protocol: turnpikev1.ProtocolTLS, Port: 5349,
		TLSSecretRef: &turnpikev1.LocalObjectReference{Name: "cert"}})
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	degraded := func(want string) func() error {
		return func() error {
			c := condition(getTurnServer(t, ts), turnpikev1.ConditionDegraded)
			switch {
			case c == nil:
				return fmt.Errorf("no Degraded condition")
			case want == "" && c.Status != metav1.ConditionFalse:
				return fmt.Errorf("Degraded %s: %s", c.Reason, c.Message)
			case want != "" && (c.Reason != render.ReasonTLSSecretMissing || !strings.Contains(c.Message, want)):
				return fmt.Errorf("Degraded %s: %q, want %q", c.Reason, c.Message, want)
			}
			return nil
		}
	}
	eventually(t, "missing", degraded("Secret cert not found"))

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cert", Namespace: ns}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("cert"), "tls.key": {}}}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, "incomplete", degraded("Secret cert has no tls.crt and tls.key"))

	secret.Data["tls.key"] = []byte("key")
	if err := env.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, "complete", degraded(""))
}
