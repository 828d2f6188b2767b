package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/turnpike-dev/turnpike/test/testenv"
)

const (
	operatorNS  = "turnpike-system"
	operatorSA  = "turnpike-operator"
	workloadNS  = "scale"
	relayLabel  = "turnpike.dev/relay"
	nodeWorkers = 8
)

// operatorUser is the operator's user name as the API server (and its
// audit log) knows it.
var operatorUser = "system:serviceaccount:" + operatorNS + ":" + operatorSA

// cluster is the control plane: kube-apiserver (with an audit log) and
// etcd from envtest, kube-controller-manager beside them.
type cluster struct {
	env      *testenv.Env
	cs       kubernetes.Interface
	c        client.Client
	auditLog string
	kcm      *os.Process
	kcmDone  chan struct{}
}

// startCluster starts the control plane with the CRDs of tree (the source
// tree of the operator under test) and an audit policy for the operator.
func startCluster(dir, tree string) (*cluster, error) {
	bin, err := testenv.Assets("kube-controller-manager")
	if err != nil {
		return nil, err
	}
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy(operatorUser)), 0o600); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(tree, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	api := env.ControlPlane.GetAPIServer()
	// A directory of our own, so that a restart keeps the certificates
	// (see testenv.StopAPIServer).
	api.CertDir = filepath.Join(dir, "apiserver")
	if err := os.MkdirAll(api.CertDir, 0o700); err != nil {
		return nil, err
	}
	cl := &cluster{auditLog: filepath.Join(dir, "audit.log")}
	apiLog, err := os.OpenFile(filepath.Join(dir, "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	api.Out, api.Err = apiLog, apiLog
	api.Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", cl.auditLog).
		Set("audit-log-maxsize", "100000"). // MB: never rotate during a run
		Set("audit-log-mode", "blocking")
	if cl.env, err = testenv.StartWith(env); err != nil {
		return nil, err
	}
	cfg := *cl.env.Config
	cfg.QPS, cfg.Burst = 500, 1000 // the benchmark's own writes (nodes, pods) must not be what is slow
	if cl.cs, err = kubernetes.NewForConfig(&cfg); err == nil {
		cl.c, err = client.New(&cfg, client.Options{Scheme: testenv.Scheme()})
	}
	if err == nil {
		err = cl.startControllerManager(dir, bin)
	}
	if err != nil {
		cl.stop()
		return nil, err
	}
	return cl, nil
}

func (cl *cluster) startControllerManager(dir, bin string) error {
	kubeconfig := filepath.Join(dir, "admin-kubeconfig")
	if err := os.WriteFile(kubeconfig, cl.env.KubeConfig, 0o600); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	cmd := testenv.ControllerManagerCommand(bin, kubeconfig)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	cl.kcm, cl.kcmDone = cmd.Process, make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(cl.kcmDone) }()
	return nil
}

func (cl *cluster) stop() {
	if cl.kcm != nil {
		_ = syscall.Kill(-cl.kcm.Pid, syscall.SIGTERM)
		select {
		case <-cl.kcmDone:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cl.kcm.Pid, syscall.SIGKILL)
			<-cl.kcmDone
		}
	}
	if cl.env != nil {
		_ = cl.env.Stop()
	}
}

// operatorAccess creates the operator's namespace and ServiceAccount, gives
// it the RBAC of tree's config/rbac (the ClusterRole the markers generate
// and the leader-election Role), and returns a kubeconfig with a token of
// that ServiceAccount: the operator gets exactly what a deployment grants.
func (cl *cluster) operatorAccess(ctx context.Context, tree string) ([]byte, error) {
	for _, ns := range []string{operatorNS, workloadNS} {
		if err := cl.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return nil, err
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: operatorSA, Namespace: operatorNS}}
	if err := cl.c.Create(ctx, sa); err != nil {
		return nil, err
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: operatorSA, Namespace: operatorNS}}
	for _, file := range []string{"role.yaml", "leader_election_role.yaml"} {
		objs, err := readYAML(filepath.Join(tree, "config", "rbac", file))
		if err != nil {
			return nil, err
		}
		for _, role := range objs {
			var binding client.Object
			ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: role.GetKind(), Name: role.GetName()}
			switch role.GetKind() {
			case "ClusterRole":
				binding = &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "scale-" + role.GetName()}, RoleRef: ref, Subjects: subject}
			case "Role":
				role.SetNamespace(operatorNS)
				binding = &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "scale-" + role.GetName(), Namespace: operatorNS}, RoleRef: ref, Subjects: subject}
			default:
				continue
			}
			if err := cl.c.Create(ctx, role); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			if err := cl.c.Create(ctx, binding); err != nil {
				return nil, err
			}
		}
	}
	day := int64(24 * 3600)
	tr, err := cl.cs.CoreV1().ServiceAccounts(operatorNS).CreateToken(ctx, operatorSA,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &day}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return testenv.TokenKubeconfig(cl.env.Config, tr.Status.Token)
}

// readYAML decodes every object of a YAML file.
func readYAML(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(obj.Object) > 0 {
			out = append(out, obj)
		}
	}
}

// nodeName is the name of relay node i.
func nodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

// nodeAddresses are node i's addresses: an InternalIP on loopback (127/8)
// and an ExternalIP in 198.18/15 (RFC 2544, benchmarking). No relay runs.
// The operator reads every ready relay's /status on its InternalIP (the
// fast path is on by default), so those reads are refused on this machine
// and nothing is sent anywhere else; nothing is sent to the ExternalIPs.
func nodeAddresses(i, generation int) []corev1.NodeAddress {
	return []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("127.%d.%d.%d", 1+i>>16, i>>8&0xff, i&0xff)},
		{Type: corev1.NodeExternalIP, Address: fmt.Sprintf("198.%d.%d.%d", 18+generation%2, i>>8&0xff, i&0xff)},
		{Type: corev1.NodeHostName, Address: nodeName(i)},
	}
}

// createNodes registers n Ready nodes labelled for relays, nodeWorkers at
// a time.
func (cl *cluster) createNodes(ctx context.Context, n int) error {
	next := make(chan int)
	errs := make(chan error, nodeWorkers)
	var wg sync.WaitGroup
	for range nodeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName(i), Labels: map[string]string{
					"kubernetes.io/hostname": nodeName(i), "kubernetes.io/os": "linux", relayLabel: "true"}}}
				if err := testenv.CreateReadyNode(ctx, cl.c, node, nodeAddresses(i, 0)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	return err
}
