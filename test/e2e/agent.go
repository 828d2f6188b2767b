//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/turnpike-dev/turnpike/test/kubelet"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

// agent stands in for the kubelet of every lab node (and for the
// scheduler's one job here, binding). docs/e2e.md lists what it does and
// what it does not emulate. Every syncPeriod it:
//
//   - binds relay pods the DaemonSet controller created for a lab node
//     (daemon pods carry a node-name affinity and wait for a scheduler);
//   - starts `turnpike relay` for each pod bound to a lab node, inside that
//     node's network namespace, with the pod's command, args and env;
//   - writes the pod's ConfigMap and Secret volumes into files and keeps
//     them in sync with the API;
//   - probes the container's readinessProbe and writes the pod's status;
//   - on pod deletion sends SIGTERM, waits up to the grace period, then
//     SIGKILL, and removes the pod from the API as the kubelet does.
type agent struct {
	t      *testing.T
	cs     kubernetes.Interface
	reader client.Reader // for the volumes' ConfigMaps and Secrets
	bin    string        // the turnpike binary: the relay image's /turnpike
	dir    string
	nodes  map[string]labNode

	// mu is held for a whole sync pass, so tests reading pods (podOn)
	// never see a relay half started or stopped.
	mu   sync.Mutex
	pods map[types.UID]*podRun
}

// relayImageBinary is the relay's binary inside the image (the DaemonSet's
// command[0]); the agent runs that file of the unpacked image (buildTurnpike).
const relayImageBinary = "/turnpike"

const syncPeriod = 500 * time.Millisecond

// podRun is one relay process, the "container" of one pod.
type podRun struct {
	node         labNode
	root         string // mount paths M of the pod live at root/M
	logPath      string
	cmd          *exec.Cmd
	exited       chan struct{}
	started      metav1.Time
	restarts     int32
	ready        bool
	termDeadline time.Time // set once SIGTERM was sent
	// fastPath is the pod's second container, the fast-path agent
	// (`turnpike fastpath`, root), when the pod has one.
	fastPath *sidecar
}

// sidecar is a container after the first: started with the relay, restarted
// when it exits (restartPolicy Always), stopped with the pod.
type sidecar struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
	restarts int
}

func (s *sidecar) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

func startAgent(t *testing.T, cs kubernetes.Interface, reader client.Reader, bin string, nodes []labNode) *agent {
	a := &agent{t: t, cs: cs, reader: reader, bin: bin, dir: t.TempDir(), nodes: map[string]labNode{}, pods: map[types.UID]*podRun{}}
	// The relay runs as the pod's user (65532): it must reach its files
	// and the binary, which live under root's private temporary dirs.
	for _, p := range []string{a.dir, bin} {
		if err := openToAll(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		a.nodes[n.name] = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			a.mu.Lock()
			err := a.sync(ctx)
			a.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				t.Logf("node agent: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(syncPeriod):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		a.stopAll()
	})
	return a
}

// sync is one pass over the relay pods.
func (a *agent) sync(ctx context.Context) error {
	pods, err := a.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=relay"})
	if err != nil {
		return err
	}
	seen := map[types.UID]bool{}
	var errs []error
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Spec.NodeName == "" {
			errs = append(errs, a.bind(ctx, pod))
			continue
		}
		node, ok := a.nodes[pod.Spec.NodeName]
		if !ok {
			continue
		}
		seen[pod.UID] = true
		errs = append(errs, a.syncPod(ctx, pod, node))
	}
	// Pods that vanished from the API (force-deleted): stop their relays.
	for uid, r := range a.pods {
		if !seen[uid] {
			r.kill()
			delete(a.pods, uid)
		}
	}
	return errors.Join(errs...)
}

// bind does the scheduler's part: the DaemonSet controller pins each
// daemon pod to its node with a required node affinity on metadata.name.
func (a *agent) bind(ctx context.Context, pod *corev1.Pod) error {
	node := testenv.DaemonPodNode(pod)
	if _, ok := a.nodes[node]; !ok || pod.DeletionTimestamp != nil {
		return nil
	}
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	err := a.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// syncPod drives one bound pod towards its desired state.
func (a *agent) syncPod(ctx context.Context, pod *corev1.Pod, node labNode) error {
	r := a.pods[pod.UID]
	if pod.DeletionTimestamp != nil {
		return a.terminate(ctx, pod, r)
	}
	if r == nil {
		r = &podRun{node: node, root: filepath.Join(a.dir, string(pod.UID), "root"),
			logPath: filepath.Join(a.dir, string(pod.UID), "relay.log")}
		if err := a.syncVolumes(ctx, pod, r); err != nil {
			return fmt.Errorf("pod %s: volumes: %w", pod.Name, err)
		}
		if err := a.start(pod, r); err != nil {
			return fmt.Errorf("pod %s: %w", pod.Name, err)
		}
		a.pods[pod.UID] = r
	}
	if r.hasExited() {
		// restartPolicy Always: the kubelet restarts a failed container.
		r.restarts++
		a.t.Logf("node agent: relay of pod %s exited; restarting it", pod.Name)
		if err := a.start(pod, r); err != nil {
			return err
		}
	}
	if err := a.syncSidecar(pod, r); err != nil {
		return fmt.Errorf("pod %s: %w", pod.Name, err)
	}
	if err := a.syncVolumes(ctx, pod, r); err != nil {
		return fmt.Errorf("pod %s: volumes: %w", pod.Name, err)
	}
	r.ready = probe(pod, node) == nil
	return a.writeStatus(ctx, pod, r)
}

// start runs the pod's first container (the relay) inside the node's
// namespace, and its fastpath container when the pod has one.
func (a *agent) start(pod *corev1.Pod, r *podRun) error {
	cmd, exited, err := a.runContainer(pod, pod.Spec.Containers[0], r, r.logPath)
	if err != nil {
		return err
	}
	r.cmd, r.exited, r.started, r.ready, r.termDeadline = cmd, exited, metav1.Now(), false, time.Time{}
	return a.syncSidecar(pod, r)
}

// syncSidecar starts the fastpath container, or restarts it once it exited.
func (a *agent) syncSidecar(pod *corev1.Pod, r *podRun) error {
	if len(pod.Spec.Containers) < 2 || (r.fastPath != nil && !r.fastPath.hasExited()) {
		return nil
	}
	if r.fastPath == nil {
		r.fastPath = &sidecar{logPath: filepath.Join(filepath.Dir(r.logPath), "fastpath.log")}
	} else {
		r.fastPath.restarts++
		a.t.Logf("node agent: fastpath container of pod %s exited; restarting it", pod.Name)
	}
	cmd, exited, err := a.runContainer(pod, pod.Spec.Containers[1], r, r.fastPath.logPath)
	if err != nil {
		return err
	}
	r.fastPath.cmd, r.fastPath.exited = cmd, exited
	return nil
}

// runContainer runs container c's command inside the node's namespace, as
// the user its security context (or the pod's) names. Paths into the pod's
// mounts are rewritten to the agent's copies (no mount namespace: see
// docs/e2e.md); everything else is the pod's own.
func (a *agent) runContainer(pod *corev1.Pod, c corev1.Container, r *podRun, logPath string) (*exec.Cmd, chan struct{}, error) {
	argv := append(append([]string{}, c.Command...), c.Args...)
	if len(argv) == 0 || argv[0] != relayImageBinary {
		return nil, nil, fmt.Errorf("container command %q: the agent only runs %s", argv, relayImageBinary)
	}
	argv[0] = a.bin
	for i := range argv[1:] {
		argv[i+1] = kubelet.HostPath(pod, r.root, argv[i+1])
	}
	if uid := runAsUser(pod, c); uid != 0 {
		// As the container runtime does: the user's process starts with
		// no capabilities (no ambient ones: Kubernetes sets none).
		id := strconv.FormatInt(uid, 10)
		argv = append([]string{"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups", "--inh-caps=-all"}, argv...)
	}
	env, err := containerEnv(c, pod, r.node)
	if err != nil {
		return nil, nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd := r.node.ns.Command(context.Background(), argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so that stopping it reaches every process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	return cmd, exited, nil
}

// runAsUser is the container's user: its own securityContext.runAsUser,
// else the pod's, else root.
func runAsUser(pod *corev1.Pod, c corev1.Container) int64 {
	if sc := c.SecurityContext; sc != nil && sc.RunAsUser != nil {
		return *sc.RunAsUser
	}
	if sc := pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil {
		return *sc.RunAsUser
	}
	return 0
}

// containerEnv is the container's environment: a PATH, plus its env with
// downward-API values filled in as the kubelet would for a host-network pod.
func containerEnv(c corev1.Container, pod *corev1.Pod, node labNode) ([]string, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				return nil, fmt.Errorf("env %s: only fieldRef values are emulated", e.Name)
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "spec.nodeName":
				v = node.name
			case "status.hostIP", "status.podIP": // host network: the same
				v = node.hostIP
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			default:
				return nil, fmt.Errorf("env %s: fieldRef %s is not emulated", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// syncVolumes writes the pod's volumes under r.root (see package kubelet).
func (a *agent) syncVolumes(ctx context.Context, pod *corev1.Pod, r *podRun) error {
	return kubelet.SyncVolumes(ctx, a.reader, pod, r.root)
}

// probe runs the container's HTTP readiness probe from inside the node's
// namespace against the host IP (a host-network pod's IP).
func probe(pod *corev1.Pod, node labNode) error {
	c := pod.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		return errors.New("no HTTP readiness probe")
	}
	get := c.ReadinessProbe.HTTPGet
	port := get.Port.IntValue()
	for _, p := range c.Ports {
		if get.Port.String() == p.Name {
			port = int(p.ContainerPort)
		}
	}
	client := node.ns.HTTPClient()
	client.Timeout = time.Second
	res, err := client.Get(fmt.Sprintf("http://%s:%d%s", node.hostIP, port, get.Path))
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("readiness probe: %s", res.Status)
	}
	return nil
}

// writeStatus reports the container as running and ready or not, only
// when that differs from what the API has.
func (a *agent) writeStatus(ctx context.Context, pod *corev1.Pod, r *podRun) error {
	ready := corev1.ConditionFalse
	if r.ready {
		ready = corev1.ConditionTrue
	}
	if pod.Status.Phase == corev1.PodRunning && kubelet.Condition(pod, corev1.PodReady) == ready &&
		len(pod.Status.ContainerStatuses) == 1 && pod.Status.ContainerStatuses[0].RestartCount == r.restarts {
		return nil
	}
	pod.Status = kubelet.RunningStatus(pod, r.node.hostIP, r.started, r.restarts, r.ready)
	_, err := a.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // the next pass reads the newer pod
	}
	return err
}

// terminate stops a deleted pod's relay as the kubelet does: SIGTERM, up
// to the pod's grace period for it to exit, then SIGKILL; then it removes
// the pod from the API (grace period 0), which the kubelet does once the
// containers are gone. Until then the pod's readiness is still reported.
func (a *agent) terminate(ctx context.Context, pod *corev1.Pod, r *podRun) error {
	if r != nil && !r.hasExited() {
		if r.termDeadline.IsZero() {
			grace := int64(30)
			if pod.DeletionGracePeriodSeconds != nil {
				grace = *pod.DeletionGracePeriodSeconds
			} else if pod.Spec.TerminationGracePeriodSeconds != nil {
				grace = *pod.Spec.TerminationGracePeriodSeconds
			}
			r.termDeadline = time.Now().Add(time.Duration(grace) * time.Second)
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
			a.t.Logf("node agent: pod %s deleted: SIGTERM to its relay, grace %ds", pod.Name, grace)
		}
		if time.Now().Before(r.termDeadline) {
			r.ready = probe(pod, r.node) == nil
			return a.writeStatus(ctx, pod, r)
		}
		a.t.Logf("node agent: pod %s: relay still running after its grace period: SIGKILL", pod.Name)
		r.kill()
	}
	if r != nil {
		r.kill() // the fastpath container, once the relay is gone
	}
	err := a.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return err
	}
	delete(a.pods, pod.UID)
	return nil
}

func (r *podRun) hasExited() bool {
	select {
	case <-r.exited:
		return true
	default:
		return false
	}
}

// kill ends the relay's process group at once, and the fastpath
// container's.
func (r *podRun) kill() {
	if f := r.fastPath; f != nil && f.cmd != nil && !f.hasExited() {
		_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
		<-f.exited
	}
	if r.cmd == nil || r.hasExited() {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.exited
}

// stopAll ends every relay when the test ends: SIGTERM, and SIGKILL after
// a few seconds (the test is over; no need to wait out a drain).
func (a *agent) stopAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.pods {
		if !r.hasExited() {
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	for uid, r := range a.pods {
		select {
		case <-r.exited:
		case <-time.After(3 * time.Second):
			r.kill()
		}
		r.kill() // the fastpath container, which needs no drain
		if a.t.Failed() {
			logTail(a.t, r.logPath, 30)
			if r.fastPath != nil {
				logTail(a.t, r.fastPath.logPath, 30)
			}
		}
		delete(a.pods, uid)
	}
}

// podOn is the running, not terminating relay on node, or nil.
func (a *agent) podOn(node string) *podRun {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.pods {
		if r.node.name == node && r.termDeadline.IsZero() && !r.hasExited() {
			return r
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// openToAll lets every user traverse the directories from the temporary
// directory down to p (t.TempDir makes them 0700).
func openToAll(p string) error {
	tmp := filepath.Clean(os.TempDir())
	for dir := filepath.Dir(p); len(dir) > len(tmp) && strings.HasPrefix(dir, tmp+"/"); dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
	}
	return os.Chmod(p, 0o755)
}
