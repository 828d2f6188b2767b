// Package testenv starts a real kube-apiserver and etcd (envtest) with the
// turnpike CRDs installed, for tests that need the API server's own
// validation, defaulting and garbage-collection-free object store.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
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
	must(turnpikev1.AddToScheme(s))
	return s
}

// Start runs kube-apiserver and etcd and installs the CRDs from config/crd/bases.
func Start() (*Env, error) {
	assets, err := binaryAssets()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
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

// binaryAssets finds kube-apiserver and etcd: $KUBEBUILDER_ASSETS, else the
// newest build of hack/build-control-plane.sh under bin/k8s.
func binaryAssets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	dirs, _ := filepath.Glob(filepath.Join(RepoRoot(), "bin", "k8s", "*", "kube-apiserver"))
	if len(dirs) == 0 {
		return "", fmt.Errorf("no kube-apiserver found: run `make test` or hack/build-control-plane.sh, or set KUBEBUILDER_ASSETS")
	}
	sort.Strings(dirs)
	return filepath.Dir(dirs[len(dirs)-1]), nil
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
