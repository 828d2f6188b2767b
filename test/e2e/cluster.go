//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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

// binDir finds the control-plane binaries with kube-controller-manager
// (make e2e builds it).
func binDir(t *testing.T) string {
	dir, err := testenv.Assets("kube-controller-manager")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// startControllerManager runs the DaemonSet controller and the garbage
// collector (testenv.ControllerManagerCommand).
func (cp *controlPlane) startControllerManager(t *testing.T) {
	t.Helper()
	runUntilCleanup(t, testenv.ControllerManagerCommand(cp.bin, cp.kubeconfig), "kube-controller-manager", 10*time.Second, 40)
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
		if err := testenv.CreateReadyNode(context.Background(), cp.client, node, addrs); err != nil {
			t.Fatal(err)
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
