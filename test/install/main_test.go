// Package install tests the ways turnpike gets installed: the Helm chart
// (lint, template, install, upgrade) and the kustomize tree (kubectl apply -k)
// against one real kube-apiserver, and the chart's monitoring objects
// against a real Prometheus and promtool.
//
// helm and kubectl run as binaries, as users run them: helm from bin/
// (`make helm` builds it; the tests build it when missing), kubectl from
// bin/k8s (hack/build-control-plane.sh).
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/test/testenv"
)

// repoRoot is the repository's top directory.
var repoRoot = testenv.RepoRoot()

// cluster is the API server shared by every test of this package; start it
// with sharedCluster. Namespaces and release names keep the tests apart.
var (
	clusterOnce sync.Once
	cluster     *testCluster
	clusterErr  error
)

type testCluster struct {
	*testenv.Env
	kubeconfig string // path of a kubeconfig file for helm and kubectl
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		_ = cluster.Stop()
		_ = os.Remove(cluster.kubeconfig)
	}
	os.Exit(code)
}

// sharedCluster starts the API server on first use.
func sharedCluster(t *testing.T) *testCluster {
	t.Helper()
	clusterOnce.Do(func() {
		env, err := testenv.Start()
		if err != nil {
			clusterErr = err
			return
		}
		f, err := os.CreateTemp("", "turnpike-install-kubeconfig-*")
		if err == nil {
			_, err = f.Write(env.KubeConfig)
			f.Close()
		}
		if err != nil {
			_ = env.Stop()
			clusterErr = err
			return
		}
		cluster = &testCluster{Env: env, kubeconfig: f.Name()}
	})
	if clusterErr != nil {
		t.Fatalf("starting the test API server: %v", clusterErr)
	}
	return cluster
}

// helmVersion must match HELM_VERSION in the Makefile.
const helmVersion = "v3.22.0"

var helmOnce sync.Once

// helmBinary is bin/helm-<version>, built with `make helm` when missing.
func helmBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(repoRoot, "bin", "helm-"+helmVersion)
	helmOnce.Do(func() {
		if _, err := os.Stat(path); err == nil {
			return
		}
		t.Logf("%s missing: building it with `make helm` (a few minutes, once)", path)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "-C", repoRoot, "helm")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("make helm: %v\n%s", err, out)
		}
	})
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no helm: %v (run `make helm`)", err)
	}
	return path
}

// kubectlBinary is the newest bin/k8s/*/kubectl.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	found, _ := filepath.Glob(filepath.Join(repoRoot, "bin", "k8s", "*", "kubectl"))
	if len(found) == 0 {
		t.Fatal("no bin/k8s/*/kubectl: run hack/build-control-plane.sh (make test does)")
	}
	return found[len(found)-1]
}

// run runs a command with a time limit and returns its stdout; stderr goes
// into the error.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

// mustRun is run that fails the test on error.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requireBinary finds a binary from a Debian package: missing, the test is
// skipped on a developer machine and fails in CI (env CI set).
func requireBinary(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrNotFound) || err != nil {
		msg := fmt.Sprintf("%s not found: apt-get install %s", name, debianPackage)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}
