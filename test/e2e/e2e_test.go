//go:build e2e

// Package e2e is the end-to-end lab (`make e2e`, root only): network
// namespaces for an internet, relay nodes and NATed clients; a real
// kube-apiserver, etcd and kube-controller-manager; the Helm chart; the
// operator; and a node agent that plays the kubelet. docs/e2e.md explains
// the lab and what it does not emulate.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/internal/image"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

const (
	ns            = "default"
	operatorNS    = "turnpike-system"
	release       = "turnpike"
	serverName    = "e2e"
	staticCred    = "e2e-static"
	staticUser    = "alice"
	restCred      = "e2e-rest"
	realm         = "e2e.turnpike.test"
	turnPort      = 3478
	healthPort    = 9642
	metricsPort   = 9641
	drainGrace    = 5 * time.Second
	stagingDelay  = 2 * time.Second
	setupDeadline = 3 * time.Minute // bounds on waiting, not timings
)

// world is everything the scenarios share.
type world struct {
	lab     *lab
	cp      *controlPlane
	cs      kubernetes.Interface
	agent   *agent
	bin     string // /turnpike of the unpacked image
	peerBin string // the pion/webrtc peer (webrtcpeer/)
	signal  *signalServer
}

// TestE2E builds the lab once and runs the scenarios in order as subtests;
// later ones change the lab (drain, rotation, deletion), so the order is
// fixed.
func TestE2E(t *testing.T) {
	w := setup(t)
	t.Run("Install", func(t *testing.T) { testInstall(t, w) })
	if t.Failed() {
		return // nothing below can work without a ready TurnServer
	}
	t.Run("SSRF", func(t *testing.T) { testSSRF(t, w) })
	t.Run("Pion", func(t *testing.T) { testPion(t, w) })
	t.Run("Uclient", func(t *testing.T) { testUclient(t, w) })
	t.Run("Chromium", func(t *testing.T) { testChromium(t, w) })
	t.Run("FastPath", func(t *testing.T) { testFastPath(t, w) })
	t.Run("Drain", func(t *testing.T) { testDrain(t, w) })
	t.Run("Rotation", func(t *testing.T) { testRotation(t, w) })
	t.Run("GarbageCollection", func(t *testing.T) { testGarbageCollection(t, w) })
}

func setup(t *testing.T) *world {
	t.Helper()
	// The logs that matter (operator, relays, controller manager) are
	// printed when a test fails; envtest's client would only warn that
	// controller-runtime has no logger.
	ctrllog.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	w := &world{bin: buildTurnpike(t), peerBin: buildPeer(t)}
	w.lab = buildLab(t)
	w.signal = startSignalServer(t, w.lab)
	w.cp = startControlPlane(t)
	cs, err := kubernetes.NewForConfig(w.cp.env.Config)
	if err != nil {
		t.Fatal(err)
	}
	w.cs = cs
	w.cp.registerNodes(t, w.lab.nodes())
	w.helmInstall(t)
	w.startOperator(t)
	w.agent = startAgent(t, cs, w.cp.client, w.bin, w.lab.nodes())
	return w
}

// buildTurnpike builds the image (this machine's platform only) as `make
// image` does, unpacks its filesystem and returns its /turnpike: the
// operator and, as the agent's relay image, the relay run what ships. The
// image's user and entrypoint are checked here, as the chart and the relay
// DaemonSet rely on them (the agent maps the DaemonSet's /turnpike to it).
func buildTurnpike(t *testing.T) string {
	t.Helper()
	platform := image.Platform{OS: runtime.GOOS, Arch: runtime.GOARCH}
	out := t.TempDir()
	_, err := image.Build(context.Background(), image.Options{
		Meta:      image.Meta{Version: "e2e", Revision: "e2e", Source: "https://github.com/turnpike-dev/turnpike"},
		Platforms: []image.Platform{platform},
		SourceDir: testenv.RepoRoot(),
		Go:        filepath.Join(runtime.GOROOT(), "bin", "go"),
		Out:       out,
	})
	if err != nil {
		t.Fatalf("building the image: %v", err)
	}
	img, err := image.FromLayout(image.LayoutDir(out), platform)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	cfg, err := image.Unpack(img, root)
	if err != nil {
		t.Fatalf("unpacking the image: %v", err)
	}
	if err := image.CheckConfig(cfg); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, cfg.Config.Entrypoint[0])
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
		t.Fatalf("the image's %s does not start: %v\n%s", cfg.Config.Entrypoint[0], err, out)
	}
	return bin
}

// helmInstall installs the chart: CRDs, the operator's ServiceAccount,
// RBAC, Services and its Deployment. The Deployment never runs (its image
// cannot be pulled here, and no deployment controller runs): replicas 0
// says so; the operator runs as a local process with the chart's
// ServiceAccount instead (startOperator).
func (w *world) helmInstall(t *testing.T) {
	t.Helper()
	helm := filepath.Join(testenv.RepoRoot(), "bin", "helm-v3.22.0")
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("no helm: %v (make e2e builds it)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helm, "install", release, filepath.Join(testenv.RepoRoot(), "charts", "turnpike"),
		"--kubeconfig", w.cp.kubeconfig, "--namespace", operatorNS, "--create-namespace",
		"--set", "operator.replicas=0")
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
}

// startOperator runs `turnpike operator` as a local process with a token of
// the chart's operator ServiceAccount, so the chart's RBAC is what it gets.
func (w *world) startOperator(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	w.refuseNodeAddressesOnHost(t)
	tr, err := w.cs.CoreV1().ServiceAccounts(operatorNS).CreateToken(ctx, release+"-operator",
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for the chart's operator ServiceAccount: %v", err)
	}
	kc, err := testenv.TokenKubeconfig(w.cp.env.Config, tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "operator-kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(w.bin, "operator", "--kubeconfig", path,
		"--leader-elect=true", "--leader-election-namespace", operatorNS,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--issuer-bind-address=",
		"--credential-staging-delay", stagingDelay.String(), "--relay-image", "turnpike:e2e")
	runUntilCleanup(t, cmd, "operator", 10*time.Second, 60)
}

// refuseNodeAddressesOnHost makes the host refuse connections to the lab
// nodes' InternalIPs until the test ends. The operator runs on the host,
// outside the lab's namespaces, and reads every ready relay's /status on
// its node's InternalIP (the fast path is on by default); the host has no
// route into the lab, so without this those reads would leave the machine
// by its default route. Refused, they fail at once and locally: the
// operator sees the relays as not read, and the lab does not check the
// TurnServer's FastPath condition (the controllers' envtests do).
func (w *world) refuseNodeAddressesOnHost(t *testing.T) {
	t.Helper()
	for _, n := range w.lab.nodes() {
		dst := n.hostIP + "/32"
		if out, err := exec.Command("ip", "route", "replace", "unreachable", dst).CombinedOutput(); err != nil {
			t.Fatalf("ip route replace unreachable %s: %v\n%s", dst, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "route", "del", "unreachable", dst).Run() })
	}
}

// turnServer is the lab's TurnServer: UDP and TCP on 3478 on every lab
// node, a short drain so the drain scenario is quick.
//
// peerPolicy.allow lists the lab's "internet", 198.18.0.0/15: the
// benchmarking block, which relays refuse by default as not globally
// reachable. Nothing else is allowed: a relay's own node addresses stay
// refused but for its relay ports (other allocations of the same relay,
// the commonest WebRTC call), which the default policy admits. A broad
// allow entry does not open a node's other ports. See docs/e2e.md.
func turnServer() *turnpikev1.TurnServer {
	return &turnpikev1.TurnServer{
		ObjectMeta: metav1.ObjectMeta{Name: serverName, Namespace: ns},
		Spec: turnpikev1.TurnServerSpec{
			Realm: realm,
			Listeners: []turnpikev1.Listener{
				{Name: "udp", Protocol: turnpikev1.ProtocolUDP, Port: turnPort},
				{Name: "tcp", Protocol: turnpikev1.ProtocolTCP, Port: turnPort},
			},
			RelayPortRange: turnpikev1.PortRange{Min: 49152, Max: 49999},
			Placement:      turnpikev1.Placement{NodeSelector: map[string]string{"turnpike.dev/relay": "true"}},
			Relay:          turnpikev1.RelayPodSettings{LogLevel: "debug", DrainGracePeriod: &metav1.Duration{Duration: drainGrace}},
			PeerPolicy:     turnpikev1.PeerPolicy{Allow: []turnpikev1.CIDR{labInternet}},
		},
	}
}

func turnCredentials() []*turnpikev1.TurnCredential {
	ref := turnpikev1.LocalObjectReference{Name: serverName}
	return []*turnpikev1.TurnCredential{
		{ObjectMeta: metav1.ObjectMeta{Name: staticCred, Namespace: ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: ref, Type: turnpikev1.CredentialStatic, Username: staticUser}},
		{ObjectMeta: metav1.ObjectMeta{Name: restCred, Namespace: ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: ref, Type: turnpikev1.CredentialSharedSecret}},
	}
}

// iceServer is one entry of iceServers.json.
type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// testInstall: scenario 1. The chart is installed (setup); a TurnServer and
// two TurnCredentials become Ready with a relay on each node, and the
// static credential's Secret carries iceServers.json with both nodes'
// public addresses.
func testInstall(t *testing.T, w *world) {
	ctx := context.Background()
	c := w.cp.client
	if err := c.Create(ctx, turnServer()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range turnCredentials() {
		if err := c.Create(ctx, tc); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, setupDeadline, "the TurnServer to be Ready on both nodes", func() error {
		ts := &turnpikev1.TurnServer{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: serverName}, ts); err != nil {
			return err
		}
		if !apimeta.IsStatusConditionTrue(ts.Status.Conditions, turnpikev1.ConditionReady) || ts.Status.ReadyNodes != 2 {
			return fmt.Errorf("ready nodes %d, conditions %+v", ts.Status.ReadyNodes, ts.Status.Conditions)
		}
		return nil
	})
	for _, tc := range turnCredentials() {
		eventually(t, setupDeadline, "TurnCredential "+tc.Name+" to be Ready", func() error {
			got := &turnpikev1.TurnCredential{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(tc), got); err != nil {
				return err
			}
			if !apimeta.IsStatusConditionTrue(got.Status.Conditions, turnpikev1.ConditionReady) {
				return fmt.Errorf("conditions %+v", got.Status.Conditions)
			}
			return nil
		})
	}
	ice := w.iceServers(t, staticCred)
	want := map[string]bool{
		fmt.Sprintf("turn:%s:%d?transport=udp", nodeAPublic, turnPort): true,
		fmt.Sprintf("turn:%s:%d?transport=udp", nodeBPublic, turnPort): true,
	}
	if len(ice) != 1 || ice[0].Username != staticUser || ice[0].Credential == "" {
		t.Fatalf("iceServers.json = %+v, want one entry for %s with a password", ice, staticUser)
	}
	for _, u := range ice[0].URLs {
		delete(want, u)
	}
	if len(want) != 0 {
		t.Errorf("iceServers.json URLs %v lack %v", ice[0].URLs, want)
	}
}

// iceServers reads iceServers.json from a TurnCredential's Secret.
func (w *world) iceServers(t *testing.T, credential string) []iceServer {
	t.Helper()
	s, err := w.cs.CoreV1().Secrets(ns).Get(context.Background(), credential, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ice []iceServer
	if err := json.Unmarshal(s.Data["iceServers.json"], &ice); err != nil {
		t.Fatalf("iceServers.json: %v\n%s", err, s.Data["iceServers.json"])
	}
	return ice
}

// secret reads one key of a Secret.
func (w *world) secret(t *testing.T, name, key string) string {
	t.Helper()
	s, err := w.cs.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(s.Data[key])
}
