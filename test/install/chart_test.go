package install

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var chartDir = filepath.Join(repoRoot, "charts", "turnpike")

// helmTemplate renders the chart as release "tp" in namespace "turnpike-system".
func helmTemplate(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out := mustRun(t, helmBinary(t), append([]string{"template", "tp", chartDir, "--namespace", "turnpike-system"}, args...)...)
	return decodeObjects(t, []byte(out))
}

// allMonitoring turns every optional monitoring object on.
var allMonitoring = []string{
	"--set", "monitoring.serviceMonitor.enabled=true",
	"--set", "monitoring.podMonitor.enabled=true",
	"--set", "monitoring.prometheusRule.enabled=true",
	"--set", "monitoring.grafanaDashboard.enabled=true",
}

// The chart carries copies of generated files; `make helm-crds` refreshes
// them. A stale copy would install an old API or old permissions.
func TestChartCopiesOfGeneratedFilesAreCurrent(t *testing.T) {
	bases, _ := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	copies, _ := filepath.Glob(filepath.Join(chartDir, "files", "crds", "*.yaml"))
	if len(bases) == 0 {
		t.Fatal("no CRDs in config/crd/bases")
	}
	names := func(paths []string) (out []string) {
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !slices.Equal(names(bases), names(copies)) {
		t.Fatalf("chart CRDs %v, config/crd/bases %v: run `make helm-crds`", names(copies), names(bases))
	}
	pairs := map[string]string{filepath.Join(repoRoot, "config", "rbac", "role.yaml"): filepath.Join(chartDir, "files", "rbac", "role.yaml")}
	for i := range bases {
		pairs[bases[i]] = copies[i]
	}
	for generated, copied := range pairs {
		a, errA := os.ReadFile(generated)
		b, errB := os.ReadFile(copied)
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: run `make helm-crds`", copied, generated)
		}
	}
}

// The CRDs the chart renders are config/crd/bases plus Helm's annotations:
// the template round trip through fromYaml/toYaml must not change a field.
func TestChartRendersTheGeneratedCRDs(t *testing.T) {
	rendered := find(t, helmTemplate(t), "CustomResourceDefinition")
	var generated []*unstructured.Unstructured
	bases, _ := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	for _, b := range bases {
		generated = append(generated, readObjects(t, b)...)
	}
	if len(rendered) != len(generated) {
		t.Fatalf("chart renders %d CRDs, config/crd/bases has %d", len(rendered), len(generated))
	}
	byName := map[string]*unstructured.Unstructured{}
	for _, g := range generated {
		byName[g.GetName()] = g
	}
	for _, r := range rendered {
		g := byName[r.GetName()]
		if g == nil {
			t.Fatalf("chart renders CRD %s that config/crd/bases lacks", r.GetName())
		}
		if got := r.GetAnnotations()["helm.sh/resource-policy"]; got != "keep" {
			t.Errorf("CRD %s: helm.sh/resource-policy = %q, want keep (crds.keep defaults to true)", r.GetName(), got)
		}
		if !reflect.DeepEqual(r.Object["spec"], g.Object["spec"]) {
			t.Errorf("CRD %s: rendered spec differs from config/crd/bases", r.GetName())
		}
	}
}

// The chart's ClusterRole grants exactly what the controllers' RBAC markers
// ask for (config/rbac/role.yaml): no more, so least privilege holds, and no
// less, so the operator works.
func TestChartClusterRoleMatchesGeneratedRole(t *testing.T) {
	generated := findOne(t, readObjects(t, filepath.Join(repoRoot, "config", "rbac", "role.yaml")), "ClusterRole")
	rendered := findOne(t, helmTemplate(t), "ClusterRole")
	if !reflect.DeepEqual(rendered.Object["rules"], generated.Object["rules"]) {
		t.Fatalf("chart ClusterRole rules differ from config/rbac/role.yaml:\nchart: %v\ngenerated: %v", rendered.Object["rules"], generated.Object["rules"])
	}
}

func TestHelmLint(t *testing.T) {
	helm := helmBinary(t)
	mustRun(t, helm, "lint", "--strict", chartDir)
	mustRun(t, helm, append([]string{"lint", "--strict", chartDir}, allMonitoring...)...)
}

// helmTemplate with several value sets: what each value adds or removes.
func TestHelmTemplateValueSets(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		objs := helmTemplate(t)
		want := map[string]int{
			"CustomResourceDefinition": 2, "ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1,
			"Role": 1, "RoleBinding": 1, "Deployment": 1, "Service": 2, // metrics, issuer
		}
		if got := kinds(objs); !reflect.DeepEqual(got, want) {
			t.Fatalf("kinds = %v, want %v", got, want)
		}
		c := operatorContainer(t, objs)
		wantArgs := []string{"operator", "--leader-elect=true", "--relay-image=turnpike:0.1.0", "--zap-log-level=info",
			"--kube-api-qps=50", "--kube-api-burst=100", "--issuer-bind-address=:8082"}
		if !slices.Equal(c.args, wantArgs) {
			t.Errorf("args = %v, want %v (relay image defaults to the operator's image)", c.args, wantArgs)
		}
		if c.image != "turnpike:0.1.0" {
			t.Errorf("image = %q", c.image)
		}
		checkRestrictedPod(t, findOne(t, objs, "Deployment"))
	})
	t.Run("own image, two replicas, separate relay image", func(t *testing.T) {
		objs := helmTemplate(t, "--set", "image.repository=registry.example.com/turnpike", "--set", "image.tag=v9",
			"--set", "operator.replicas=2", "--set", "relayImage=registry.example.com/relay:v9")
		c := operatorContainer(t, objs)
		if c.image != "registry.example.com/turnpike:v9" || !slices.Contains(c.args, "--relay-image=registry.example.com/relay:v9") {
			t.Errorf("image %q args %v", c.image, c.args)
		}
		// JSON numbers decode as float64.
		if r, _, _ := unstructured.NestedFieldNoCopy(findOne(t, objs, "Deployment").Object, "spec", "replicas"); r != float64(2) {
			t.Errorf("replicas = %v, want 2", r)
		}
	})
	t.Run("API rate limit", func(t *testing.T) {
		c := operatorContainer(t, helmTemplate(t, "--set", "operator.kubeAPI.qps=200", "--set", "operator.kubeAPI.burst=400"))
		if !slices.Contains(c.args, "--kube-api-qps=200") || !slices.Contains(c.args, "--kube-api-burst=400") {
			t.Errorf("args %v: want --kube-api-qps=200 and --kube-api-burst=400", c.args)
		}
	})
	t.Run("relay image follows the operator image", func(t *testing.T) {
		c := operatorContainer(t, helmTemplate(t, "--set", "image.tag=v7"))
		if !slices.Contains(c.args, "--relay-image=turnpike:v7") {
			t.Errorf("args %v: relay image should be the operator's image", c.args)
		}
	})
	t.Run("no issuer", func(t *testing.T) {
		objs := helmTemplate(t, "--set", "issuer.enabled=false")
		if n := kinds(objs)["Service"]; n != 1 {
			t.Errorf("%d Services with issuer.enabled=false, want only the metrics Service", n)
		}
		if c := operatorContainer(t, objs); !slices.Contains(c.args, "--issuer-bind-address=") {
			t.Errorf("args %v: the issuer should be off", c.args)
		}
	})
	t.Run("no CRDs", func(t *testing.T) {
		if n := kinds(helmTemplate(t, "--set", "crds.install=false"))["CustomResourceDefinition"]; n != 0 {
			t.Errorf("%d CRDs rendered with crds.install=false", n)
		}
	})
	t.Run("CRDs not kept", func(t *testing.T) {
		for _, crd := range find(t, helmTemplate(t, "--set", "crds.keep=false"), "CustomResourceDefinition") {
			if _, ok := crd.GetAnnotations()["helm.sh/resource-policy"]; ok {
				t.Errorf("CRD %s keeps helm.sh/resource-policy with crds.keep=false", crd.GetName())
			}
		}
	})
	t.Run("all monitoring", func(t *testing.T) {
		objs := helmTemplate(t, allMonitoring...)
		for _, k := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} {
			findOne(t, objs, k)
		}
		cm := findOne(t, objs, "ConfigMap")
		if data, _, _ := unstructured.NestedString(cm.Object, "data", "turnpike-relays.json"); !strings.Contains(data, "turnpike_relay_allocations_active") {
			t.Errorf("dashboard ConfigMap lacks the relay metrics")
		}
		alerts := alertNames(t, findOne(t, objs, "PrometheusRule"))
		want := []string{"TurnpikeCredentialRotationFailing", "TurnpikeRelayAuthFailureSpike", "TurnpikeRelayDown", "TurnpikeRelayQuotaRejecting"}
		if !slices.Equal(alerts, want) {
			t.Errorf("alerts = %v, want %v (near-full needs allocationsTotalQuota)", alerts, want)
		}
	})
	t.Run("quota near full alert", func(t *testing.T) {
		objs := helmTemplate(t, append(allMonitoring, "--set", "monitoring.prometheusRule.allocationsTotalQuota=5000")...)
		if !slices.Contains(alertNames(t, findOne(t, objs, "PrometheusRule")), "TurnpikeRelayAllocationQuotaNearFull") {
			t.Error("no TurnpikeRelayAllocationQuotaNearFull with allocationsTotalQuota set")
		}
	})
}

// values.schema.json refuses what cannot work.
func TestHelmRejectsInvalidValues(t *testing.T) {
	cases := map[string][]string{
		"unknown key":                          {"--set", "operater.replicas=2"},
		"two replicas without leader election": {"--set", "operator.replicas=2", "--set", "operator.leaderElect=false"},
		"bad pull policy":                      {"--set", "image.pullPolicy=Sometimes"},
		"bad interval":                         {"--set", "monitoring.podMonitor.interval=often"},
		"zero API requests per second":         {"--set", "operator.kubeAPI.qps=0"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := run(t, helmBinary(t), append([]string{"template", "tp", chartDir}, args...)...)
			if err == nil {
				t.Fatalf("helm template %v succeeded; the schema should refuse it", args)
			}
		})
	}
}

type container struct {
	image string
	args  []string
}

func operatorContainer(t *testing.T, objs []*unstructured.Unstructured) container {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(findOne(t, objs, "Deployment").Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := cs[0].(map[string]any)
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	return container{image: c["image"].(string), args: args}
}

// checkRestrictedPod checks the Pod Security "restricted" essentials.
func checkRestrictedPod(t *testing.T, deploy *unstructured.Unstructured) {
	t.Helper()
	pod, _, _ := unstructured.NestedMap(deploy.Object, "spec", "template", "spec")
	if v, _, _ := unstructured.NestedBool(pod, "securityContext", "runAsNonRoot"); !v {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if v, _, _ := unstructured.NestedString(pod, "securityContext", "seccompProfile", "type"); v != "RuntimeDefault" {
		t.Errorf("seccompProfile = %q", v)
	}
	c := pod["containers"].([]any)[0].(map[string]any)
	if v, _, _ := unstructured.NestedBool(c, "securityContext", "allowPrivilegeEscalation"); v {
		t.Error("allowPrivilegeEscalation is true")
	}
	if v, _, _ := unstructured.NestedStringSlice(c, "securityContext", "capabilities", "drop"); !slices.Equal(v, []string{"ALL"}) {
		t.Errorf("capabilities.drop = %v", v)
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if port, _, _ := unstructured.NestedFieldNoCopy(c, probe, "httpGet", "port"); port != "health" {
			t.Errorf("%s port = %v, want the health port (8081)", probe, port)
		}
	}
}

func alertNames(t *testing.T, rule *unstructured.Unstructured) []string {
	t.Helper()
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	var names []string
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			names = append(names, r.(map[string]any)["alert"].(string))
		}
	}
	slices.Sort(names)
	return names
}
