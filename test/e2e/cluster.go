//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

// controlPlane is kube-apiserver and etcd (envtest, without CRDs: the Helm
// chart installs them) plus kube-controller-manager running the DaemonSet
// controller and the garbage collector.
type controlPlane struct {
	env        *envtest.Environment
	client     client.Client
	kubeconfig string // file with an admin kubeconfig
	bin        string // directory of kube-apiserver, kubectl, kube-controller-manager
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	bin := binDir(t)
	env := &envtest.Environment{BinaryAssetsDirectory: bin}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd from %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{env: env, client: c, kubeconfig: kubeconfig, bin: bin}
	cp.startControllerManager(t)
	return cp
}

// binDir finds the control-plane binaries: $KUBEBUILDER_ASSETS, else the
// newest bin/k8s/* that has kube-controller-manager (make e2e builds it).
func binDir(t *testing.T) string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	found, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "bin", "k8s", "*", "kube-controller-manager"))
	if len(found) == 0 {
		t.Fatal("no bin/k8s/*/kube-controller-manager: run WITH_CONTROLLER_MANAGER=1 hack/build-control-plane.sh (make e2e does)")
	}
	sort.Strings(found)
	return filepath.Dir(found[len(found)-1])
}

// startControllerManager runs only the controllers the lab needs: the
// DaemonSet controller creates the relay pods, the garbage collector
// deletes what a deleted owner owned. It serves nothing (--secure-port=0),
// so it needs no certificates; it uses the admin kubeconfig for everything
// (--use-service-account-credentials=false), so it needs no token signer.
func (cp *controlPlane) startControllerManager(t *testing.T) {
	t.Helper()
	cmd := exec.Command(filepath.Join(cp.bin, "kube-controller-manager"),
		"--kubeconfig="+cp.kubeconfig,
		"--controllers=daemonset,garbagecollector",
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		"-v=2")
	runUntilCleanup(t, cmd, "kube-controller-manager", 10*time.Second, 40)
}

// runUntilCleanup starts cmd in its own process group with its output in a
// log file, and stops the whole group when the test ends (SIGTERM, SIGKILL
// after grace). When the test failed, the last tailLines of the log are
// shown.
func runUntilCleanup(t *testing.T, cmd *exec.Cmd, name string, grace time.Duration, tailLines int) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stopGroup(cmd, exited, grace)
		_ = logFile.Close()
		if t.Failed() {
			logTail(t, logPath, tailLines)
		}
	})
}

// stopGroup sends SIGTERM to a process group, and SIGKILL if it has not
// exited after grace.
func stopGroup(cmd *exec.Cmd, exited <-chan struct{}, grace time.Duration) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// registerNodes creates a Ready Node per lab node, labelled for the
// TurnServer's placement. node-a's public address is its ExternalIP;
// node-b's comes from the turnpike.dev/external-ip annotation (its NAT's
// address, which the node itself does not know).
func (cp *controlPlane) registerNodes(t *testing.T, nodes []labNode) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   n.name,
			Labels: map[string]string{"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "turnpike.dev/relay": "true"},
		}}
		addrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.hostIP}, {Type: corev1.NodeHostName, Address: n.name}}
		if n.publicIP == n.hostIP {
			addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: n.publicIP})
		} else {
			node.Annotations = map[string]string{turnpikev1.AnnotationExternalIP: n.publicIP}
		}
		if err := cp.client.Create(ctx, node); err != nil {
			t.Fatalf("creating Node %s: %v", n.name, err)
		}
		node.Status = corev1.NodeStatus{
			Addresses: addrs,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "the e2e node agent plays this node's kubelet", LastHeartbeatTime: metav1.Now()}},
		}
		if err := cp.client.Status().Update(ctx, node); err != nil {
			t.Fatalf("Node %s status: %v", n.name, err)
		}
		// The API server taints new Nodes not-ready; the node lifecycle
		// controller (not run here) lifts the taint when the kubelet
		// reports Ready. Lift it as it would.
		if err := cp.client.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
			t.Fatal(err)
		}
		node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady })
		if err := cp.client.Update(ctx, node); err != nil {
			t.Fatalf("Node %s taints: %v", n.name, err)
		}
	}
}

// logTail logs the last n lines of a file, for a failed test.
func logTail(t *testing.T, path string, n int) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("last lines of %s:\n%s", filepath.Base(path), strings.Join(lines, "\n"))
}

// eventually polls check until it returns nil, failing the test with the
// last error after timeout: a bound on waiting for controllers, not a timing.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
