package install

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The API server has no controllers and no kubelet: these tests check that
// the objects are accepted and land as rendered, not that pods run.

// One release installs the CRDs. testenv created them before, as a user's
// earlier `kubectl apply -k config/crd` would have: --take-ownership adopts
// them. The upgrade changes a value and must reach the live Deployment.
func TestHelmInstallAndUpgrade(t *testing.T) {
	c := sharedCluster(t)
	helm := helmBinary(t)
	const ns, release = "helm-crds", "tp"
	kube := []string{"--kubeconfig", c.kubeconfig, "--namespace", ns}

	out := mustRun(t, helm, append([]string{"install", release, chartDir, "--create-namespace", "--take-ownership", "--wait=false"}, kube...)...)
	// NOTES.txt tells the next step with the release's real names.
	if want := "rollout status deployment/tp-turnpike-operator"; !strings.Contains(out, want) {
		t.Errorf("helm install output lacks %q:\n%s", want, out)
	}
	deploy := getDeployment(t, c, ns, "tp-turnpike-operator")
	if *deploy.Spec.Replicas != 1 {
		t.Errorf("replicas = %d, want 1", *deploy.Spec.Replicas)
	}
	for _, name := range []string{"turnservers.turnpike.dev", "turncredentials.turnpike.dev"} {
		crd := newCRD()
		mustGet(t, c, client.ObjectKey{Name: name}, crd)
		if crd.GetAnnotations()["meta.helm.sh/release-name"] != release || crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s annotations %v: want it owned by release %s and kept on uninstall", name, crd.GetAnnotations(), release)
		}
	}
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "tp-turnpike-operator"}, &corev1.ServiceAccount{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "tp-turnpike-operator-metrics"}, &corev1.Service{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "tp-turnpike-issuer"}, &corev1.Service{})
	mustGet(t, c, client.ObjectKey{Name: "tp-turnpike-operator"}, &rbacv1.ClusterRole{})
	mustGet(t, c, client.ObjectKey{Name: "tp-turnpike-operator"}, &rbacv1.ClusterRoleBinding{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "tp-turnpike-leader-election"}, &rbacv1.Role{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "tp-turnpike-leader-election"}, &rbacv1.RoleBinding{})

	mustRun(t, helm, append([]string{"upgrade", release, chartDir, "--wait=false", "--set", "operator.replicas=2", "--set", "image.tag=v2"}, kube...)...)
	deploy = getDeployment(t, c, ns, "tp-turnpike-operator")
	if *deploy.Spec.Replicas != 2 {
		t.Errorf("after upgrade: replicas = %d, want 2", *deploy.Spec.Replicas)
	}
	if img := deploy.Spec.Template.Spec.Containers[0].Image; img != "turnpike:v2" {
		t.Errorf("after upgrade: image = %q, want turnpike:v2", img)
	}

	// Uninstall keeps the CRDs (crds.keep), and with them users' objects.
	mustRun(t, helm, append([]string{"uninstall", release, "--wait=false"}, kube...)...)
	mustGet(t, c, client.ObjectKey{Name: "turnservers.turnpike.dev"}, newCRD())
}

// A second release, in another namespace, without CRDs (the first release
// owns them): several operators can be installed side by side this way.
func TestHelmInstallWithoutCRDs(t *testing.T) {
	c := sharedCluster(t)
	const ns = "helm-nocrds"
	mustRun(t, helmBinary(t), "install", "second", chartDir, "--kubeconfig", c.kubeconfig, "--namespace", ns, "--create-namespace",
		"--wait=false", "--set", "crds.install=false")
	t.Cleanup(func() {
		_, _ = run(t, helmBinary(t), "uninstall", "second", "--kubeconfig", c.kubeconfig, "--namespace", ns, "--wait=false")
	})
	getDeployment(t, c, ns, "second-turnpike-operator")
}

// newCRD is an empty CRD to read into; the test scheme lacks the apiextensions types.
func newCRD() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	return u
}

func getDeployment(t *testing.T, c *testCluster, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: name}, d)
	return d
}

func mustGet(t *testing.T, c *testCluster, key client.ObjectKey, obj client.Object) {
	t.Helper()
	if err := c.Client.Get(context.Background(), key, obj); err != nil {
		t.Fatalf("get %T %s: %v", obj, key, err)
	}
}
