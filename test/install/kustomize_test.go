package install

import (
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// kubectl apply -k config/default, as the README says, into the shared API server.
func TestKubectlApplyDefault(t *testing.T) {
	c := sharedCluster(t)
	mustRun(t, kubectlBinary(t), "--kubeconfig", c.kubeconfig, "apply", "-k", filepath.Join(repoRoot, "config", "default"))

	const ns = "turnpike-system"
	mustGet(t, c, client.ObjectKey{Name: ns}, &corev1.Namespace{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "turnpike-operator"}, &corev1.ServiceAccount{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "turnpike-operator-metrics"}, &corev1.Service{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "turnpike-operator-issuer"}, &corev1.Service{})
	mustGet(t, c, client.ObjectKey{Namespace: ns, Name: "turnpike-leader-election"}, &rbacv1.Role{})
	binding := &rbacv1.ClusterRoleBinding{}
	mustGet(t, c, client.ObjectKey{Name: "turnpike-operator"}, binding)
	// The binding must name the role as kustomize renamed it.
	mustGet(t, c, client.ObjectKey{Name: binding.RoleRef.Name}, &rbacv1.ClusterRole{})

	d := getDeployment(t, c, ns, "turnpike-operator")
	op := d.Spec.Template.Spec.Containers[0]
	if d.Spec.Template.Spec.ServiceAccountName != "turnpike-operator" {
		t.Errorf("serviceAccountName = %q", d.Spec.Template.Spec.ServiceAccountName)
	}
	var relayImage string
	for _, e := range op.Env {
		if e.Name == "RELAY_IMAGE" {
			relayImage = e.Value
		}
	}
	if relayImage != op.Image {
		t.Errorf("RELAY_IMAGE = %q, operator image %q: relays should run the operator's image", relayImage, op.Image)
	}
}

// make deploy IMG=... (hack/deploy.sh) sets the image of both the operator
// and the relays. DRY_RUN=1 prints instead of applying.
func TestDeployScriptSetsImage(t *testing.T) {
	t.Setenv("DRY_RUN", "1")
	const image = "registry.example.com:5000/turnpike:v1.2.3"
	out := mustRun(t, filepath.Join(repoRoot, "hack", "deploy.sh"), image)
	d := findOne(t, decodeObjects(t, []byte(out)), "Deployment")
	c, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	op := c[0].(map[string]any)
	env := op["env"].([]any)[0].(map[string]any)
	if op["image"] != image || env["name"] != "RELAY_IMAGE" || env["value"] != image {
		t.Errorf("image %v, env %v: want both %s", op["image"], env, image)
	}
}

// config/prometheus and the chart must scrape relays the same way.
func TestKustomizePodMonitorMatchesChart(t *testing.T) {
	out := mustRun(t, kubectlBinary(t), "kustomize", filepath.Join(repoRoot, "config", "prometheus"))
	fromKustomize := findOne(t, decodeObjects(t, []byte(out)), "PodMonitor")
	fromChart := findOne(t, helmTemplate(t, "--set", "monitoring.podMonitor.enabled=true"), "PodMonitor")
	if !reflect.DeepEqual(fromKustomize.Object["spec"], fromChart.Object["spec"]) {
		t.Errorf("config/prometheus PodMonitor spec differs from the chart's:\nkustomize: %v\nchart: %v",
			fromKustomize.Object["spec"], fromChart.Object["spec"])
	}
}
