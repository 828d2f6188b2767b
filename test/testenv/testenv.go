// Package testenv starts a real kube-apiserver and etcd (envtest) with the
// turnpike CRDs installed, for tests that need the API server's own
// validation, defaulting and garbage-collection-free object store.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	// KubeConfig is a kubeconfig file's content for an admin of this API server.
	KubeConfig []byte
	Client     client.Client
	Scheme     *apiruntime.Scheme
	env        *envtest.Environment
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Scheme has the built-in types and turnpike's.
func Scheme() *apiruntime.Scheme {
	s := apiruntime.NewScheme()
	must(clientgoscheme.AddToScheme(s))
	must(apiextensionsv1.AddToScheme(s))
	must(turnpikev1.AddToScheme(s))
	return s
}

// Start runs kube-apiserver and etcd and installs the CRDs from config/crd/bases.
func Start() (*Env, error) {
	return StartWith(&envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	})
}

// StartWith starts a prepared envtest environment (other CRDs, extra
// kube-apiserver flags), finding the binaries as Start does when env names
// no BinaryAssetsDirectory.
func StartWith(env *envtest.Environment) (*Env, error) {
	if env.BinaryAssetsDirectory == "" {
		assets, err := Assets("kube-apiserver")
		if err != nil {
			return nil, err
		}
		env.BinaryAssetsDirectory = assets
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", env.BinaryAssetsDirectory, err)
	}
	s := Scheme()
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Config: cfg, KubeConfig: env.KubeConfig, Client: c, Scheme: s, env: env}, nil
}

// Stop ends the control plane.
func (e *Env) Stop() error { return e.env.Stop() }

// StopAPIServer stops kube-apiserver and leaves etcd running, as an
// API-server outage does. StartAPIServer starts it again on the same
// port, certificates and etcd, so clients need no new configuration. That
// needs env.ControlPlane.APIServer.CertDir set before the first start:
// envtest deletes a certificate directory it made itself when it stops.
func (e *Env) StopAPIServer() error { return e.env.ControlPlane.APIServer.Stop() }

// StartAPIServer: see StopAPIServer.
func (e *Env) StartAPIServer() error { return e.env.ControlPlane.APIServer.Start() }

// Assets finds the control-plane binaries, a directory that holds binary
// (kube-apiserver; kube-controller-manager for tests that need one):
// $KUBEBUILDER_ASSETS, else the newest build of hack/build-control-plane.sh
// under bin/k8s that has it.
func Assets(binary string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	dirs, _ := filepath.Glob(filepath.Join(RepoRoot(), "bin", "k8s", "*", binary))
	if len(dirs) == 0 {
		return "", fmt.Errorf("no bin/k8s/*/%s: run hack/build-control-plane.sh (WITH_CONTROLLER_MANAGER=1 for kube-controller-manager), or set KUBEBUILDER_ASSETS", binary)
	}
	sort.Strings(dirs)
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

// ControllerManagerCommand runs kube-controller-manager from bin with only
// the DaemonSet controller (it creates the relay pods) and the garbage
// collector (it deletes what a deleted owner owned). It serves nothing
// (--secure-port=0), so it needs no certificates; it uses the admin
// kubeconfig for everything (--use-service-account-credentials=false), so
// it needs no token signer.
func ControllerManagerCommand(bin, kubeconfig string) *exec.Cmd {
	return exec.Command(filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig,
		"--controllers=daemonset,garbagecollector",
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		"-v=2")
}

// CreateReadyNode registers a Node as its kubelet would, Ready with the
// given addresses. The API server taints every new Node not-ready; the
// node lifecycle controller lifts the taint once the kubelet reports
// Ready. Tests run no such controller, so this lifts it as it would: the
// DaemonSet controller places no pod on a tainted node.
func CreateReadyNode(ctx context.Context, c client.Client, node *corev1.Node, addresses []corev1.NodeAddress) error {
	if err := c.Create(ctx, node); err != nil {
		return fmt.Errorf("creating Node %s: %w", node.Name, err)
	}
	node.Status = corev1.NodeStatus{
		Addresses: addresses,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "a stand-in plays this node's kubelet", LastHeartbeatTime: metav1.Now()}},
	}
	if err := c.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("Node %s status: %w", node.Name, err)
	}
	node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady })
	if err := c.Update(ctx, node); err != nil {
		return fmt.Errorf("Node %s taints: %w", node.Name, err)
	}
	return nil
}

// GVK is the group-version-kind of a turnpike kind.
func GVK(kind string) schema.GroupVersionKind { return turnpikev1.GroupVersion.WithKind(kind) }

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// Eventually polls check until it returns nil, and fails the test with the
// last error after 30 seconds. It waits for controllers; it does not time
// them, so the limit is generous.
func Eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ServiceAccountToken creates a ServiceAccount and has the API server mint a
// token for it, as the kubelet would for a pod.
func (e *Env) ServiceAccountToken(t testing.TB, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if err := e.Client.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// GrantUse lets a ServiceAccount be issued one TurnCredential's
// credentials, with the Role a user would write.
func (e *Env) GrantUse(t testing.TB, ns, serviceAccount, credential string) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "use-" + credential, Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{turnpikev1.GroupVersion.Group}, Resources: []string{"turncredentials"},
			ResourceNames: []string{credential}, Verbs: []string{"use"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "use-" + credential, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: ns}},
	}
	if err := e.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
}

// DaemonPodNode is the node a daemon pod is meant for: the DaemonSet
// controller pins each pod to its node with a required node affinity on
// metadata.name and leaves the binding to the scheduler, which tests stand
// in for. "" when the pod has no such affinity.
func DaemonPodNode(pod *corev1.Pod) string {
	aff := pod.Spec.Affinity
	if aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, term := range aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// TokenKubeconfig is a kubeconfig for this API server (cfg's host and CA)
// that authenticates with a bearer token, e.g. a ServiceAccount's, so a
// process run with it gets that account's RBAC.
func TokenKubeconfig(cfg *rest.Config, token string) ([]byte, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["token"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "token"}
	kc.CurrentContext = "test"
	return clientcmd.Write(*kc)
}
