package install

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/turnpike-dev/turnpike/relay"
	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// A real Prometheus scrapes a real relay with the chart's PodMonitor
// settings. Without Kubernetes service discovery, the test does what the
// Prometheus Operator does with a PodMonitor, by hand: keep only targets whose
// pod labels match the selector and whose container port has the endpoint's
// name, then apply the endpoint's own relabelings. The pod's labels come as
// the __meta_kubernetes_* labels discovery would attach. Only the scrape
// interval is shortened, so the test does not wait 30s.
func TestPrometheusScrapesRelayWithChartSettings(t *testing.T) {
	promBin := requireBinary(t, "prometheus", "prometheus")
	monitor := findOne(t, helmTemplate(t, "--set", "monitoring.podMonitor.enabled=true"), "PodMonitor")
	metricsAddr := startRelay(t)

	relayPod := map[string]string{
		"app.kubernetes.io/name":      "turnpike",
		"app.kubernetes.io/component": "relay",
		"app.kubernetes.io/instance":  "example",
		"turnpike.dev/turnserver":     "example",
	}
	// A target the PodMonitor must not scrape: the operator's pod, whose
	// metrics port has the same name. If the selector were lost, it would
	// show up (as a failed scrape of a closed port).
	operatorPod := map[string]string{"app.kubernetes.io/name": "turnpike", "app.kubernetes.io/component": "operator"}
	targets := []staticTarget{
		{addr: metricsAddr, pod: "example-relay-node-a", node: "node-a", labels: relayPod, port: "metrics"},
		{addr: closedAddr(t), pod: "turnpike-operator-0", node: "node-b", labels: operatorPod, port: "metrics"},
	}
	promConfig := scrapeConfigFromPodMonitor(t, monitor, targets)
	promAddr := startPrometheus(t, promBin, promConfig)

	// job, node and turnserver come from the PodMonitor's relabelings.
	query := `up{job="turnpike-relay", node="node-a", turnserver="example", namespace="default", pod="example-relay-node-a"}`
	waitForQuery(t, promAddr, query, "1")
	waitForQuery(t, promAddr, `sum(turnpike_relay_build_info{job="turnpike-relay", node="node-a"})`, "1")
	waitForQuery(t, promAddr, `count(turnpike_relay_auth_failures_total{job="turnpike-relay"}) > 0`, "")
	if v := queryValue(t, promAddr, `count(up)`); v != "1" {
		t.Errorf("count(up) = %q, want 1: the operator's pod must not be scraped by the relay PodMonitor", v)
	}

	// Every relay metric the dashboard and the alerts use exists on a
	// running relay (relays create every series at zero), so a renamed or
	// misspelt metric fails here instead of showing "no data".
	for _, name := range relayMetricsUsedByChart(t) {
		if v := queryValue(t, promAddr, `count({__name__="`+name+`", job="turnpike-relay"})`); v == "" {
			t.Errorf("metric %s, used by the chart's dashboard or alerts, is not exported by the relay", name)
		}
	}
}

var relayMetricName = regexp.MustCompile(`turnpike_relay_[a-z_]+`)

// relayMetricsUsedByChart lists the relay metric names in the dashboard and
// the alert rules.
func relayMetricsUsedByChart(t *testing.T) []string {
	t.Helper()
	objs := helmTemplate(t, "--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.grafanaDashboard.enabled=true",
		"--set", "monitoring.prometheusRule.allocationsTotalQuota=100")
	dashboard, _, _ := unstructured.NestedString(findOne(t, objs, "ConfigMap").Object, "data", "turnpike-relays.json")
	if !json.Valid([]byte(dashboard)) {
		t.Fatal("the dashboard is not valid JSON")
	}
	rules, err := yaml.Marshal(findOne(t, objs, "PrometheusRule").Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var names []string
	for _, n := range relayMetricName.FindAllString(dashboard+string(rules), -1) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if len(names) < 5 {
		t.Fatalf("found only %v in the dashboard and rules", names)
	}
	return names
}

// promtool accepts the chart's alert rules, and they fire as intended on
// made-up series (promtool test rules).
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool := requireBinary(t, "promtool", "prometheus")
	rule := findOne(t, helmTemplate(t, "--set", "monitoring.prometheusRule.enabled=true",
		"--set", "monitoring.prometheusRule.allocationsTotalQuota=100"), "PrometheusRule")
	rulesYAML, err := yaml.Marshal(rule.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesFile, string(rulesYAML))
	mustRun(t, promtool, "check", "rules", rulesFile)

	testFile := filepath.Join(dir, "rules_test.yaml")
	writeFile(t, testFile, alertTests)
	out, err := run(t, promtool, "test", "rules", testFile)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// alertTests are promtool unit tests of the chart's alerts. The series
// carry the labels the chart's PodMonitor produces.
const alertTests = `
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: 'up{job="turnpike-relay", namespace="default", pod="r1", node="n1", instance="10.0.0.1:9641"}'
    values: '1 1 0 0 0 0 0 0 0 0'
  - series: 'turnpike_relay_auth_failures_total{job="turnpike-relay", namespace="default", pod="r1", node="n1", reason="bad_integrity"}'
    values: '0+600x20'
  - series: 'turnpike_relay_allocations_active{job="turnpike-relay", namespace="default", pod="r1", node="n1"}'
    values: '95x20'
  - series: 'turnpike_relay_quota_rejections_total{job="turnpike-relay", namespace="default", pod="r1", node="n1", quota="allocations_total"}'
    values: '0+1x20'
  - series: 'turnpike_operator_credential_rotations_total{job="turnpike-operator", pod="op", step="publish", result="failure"}'
    values: '0+1x40'
  alert_rule_test:
  - eval_time: 9m
    alertname: TurnpikeRelayDown
    exp_alerts:
    - exp_labels: {severity: critical, job: turnpike-relay, namespace: default, pod: r1, node: n1, instance: "10.0.0.1:9641"}
      exp_annotations:
        summary: "TURN relay 10.0.0.1:9641 on node n1 is not answering scrapes"
        description: "Clients assigned to this node cannot relay. Check the relay pod and ` + "`kubectl get turnserver -A`" + `."
  - eval_time: 16m
    alertname: TurnpikeRelayAuthFailureSpike
    exp_alerts:
    - exp_labels: {severity: warning, namespace: default, pod: r1, node: n1, reason: bad_integrity}
      exp_annotations:
        summary: "TURN relay r1: 10 authentication failures/s (bad_integrity)"
        description: "Expired or rotated credentials in clients, a realm mismatch, or someone guessing passwords."
  - eval_time: 16m
    alertname: TurnpikeRelayAllocationQuotaNearFull
    exp_alerts:
    - exp_labels: {severity: warning, job: turnpike-relay, namespace: default, pod: r1, node: n1}
      exp_annotations:
        summary: "TURN relay r1 uses 95% of its allocation quota"
        description: "New allocations will soon be refused with 486. Raise spec.quotas.allocationsTotal or add relay nodes."
  - eval_time: 16m
    alertname: TurnpikeRelayQuotaRejecting
    exp_alerts:
    - exp_labels: {severity: warning, namespace: default, pod: r1, node: n1, quota: allocations_total}
      exp_annotations:
        summary: "TURN relay r1 refuses allocations: quota allocations_total reached"
        description: "Clients get 486 Allocation Quota Reached. Raise spec.quotas or add relay nodes."
  - eval_time: 35m
    alertname: TurnpikeCredentialRotationFailing
    exp_alerts:
    - exp_labels: {severity: warning, job: turnpike-operator, step: publish, result: failure}
      exp_annotations:
        summary: "Credential rotation keeps failing"
        description: "The operator cannot rotate a TurnCredential; the current secret stays in use past its interval. See ` + "`kubectl describe turncredential`" + `."
  - eval_time: 1m
    alertname: TurnpikeRelayDown
    exp_alerts: []
`

type staticTarget struct {
	addr, pod, node, port string
	labels                map[string]string
}

// scrapeConfigFromPodMonitor renders a Prometheus config that scrapes the
// targets as the Prometheus Operator would scrape pods with this PodMonitor.
func scrapeConfigFromPodMonitor(t *testing.T, monitor *unstructured.Unstructured, targets []staticTarget) string {
	t.Helper()
	endpoints, _, _ := unstructured.NestedSlice(monitor.Object, "spec", "podMetricsEndpoints")
	if len(endpoints) != 1 {
		t.Fatalf("PodMonitor has %d endpoints, want 1", len(endpoints))
	}
	ep := endpoints[0].(map[string]any)
	selector, _, _ := unstructured.NestedStringMap(monitor.Object, "spec", "selector", "matchLabels")

	var relabel []map[string]any
	for key, value := range selector { // selector.matchLabels: keep matching pods
		relabel = append(relabel, map[string]any{
			"action": "keep", "source_labels": []string{"__meta_kubernetes_pod_label_" + sanitizeLabel(key)}, "regex": value,
		})
	}
	relabel = append(relabel,
		map[string]any{"action": "keep", "source_labels": []string{"__meta_kubernetes_pod_container_port_name"}, "regex": ep["port"]},
		map[string]any{"source_labels": []string{"__meta_kubernetes_namespace"}, "target_label": "namespace"},
		map[string]any{"source_labels": []string{"__meta_kubernetes_pod_name"}, "target_label": "pod"},
	)
	for _, r := range ep["relabelings"].([]any) { // the endpoint's own relabelings, camelCase to snake_case
		relabel = append(relabel, snakeKeys(r.(map[string]any)))
	}

	var static []map[string]any
	for _, tg := range targets {
		labels := map[string]string{
			"__meta_kubernetes_namespace":               "default",
			"__meta_kubernetes_pod_name":                tg.pod,
			"__meta_kubernetes_pod_node_name":           tg.node,
			"__meta_kubernetes_pod_container_port_name": tg.port,
		}
		for k, v := range tg.labels {
			labels["__meta_kubernetes_pod_label_"+sanitizeLabel(k)] = v
		}
		static = append(static, map[string]any{"targets": []string{tg.addr}, "labels": labels})
	}
	cfg := map[string]any{
		"global": map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"scrape_configs": []any{map[string]any{
			"job_name":        "podMonitor/" + monitor.GetNamespace() + "/" + monitor.GetName() + "/0",
			"metrics_path":    ep["path"],
			"scrape_interval": "1s",
			"static_configs":  static,
			"relabel_configs": relabel,
		}},
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// sanitizeLabel is how Kubernetes discovery turns a pod label into a
// Prometheus label name.
func sanitizeLabel(s string) string { return invalidLabelChars.ReplaceAllString(s, "_") }

// snakeKeys maps a Prometheus Operator relabeling to a relabel_config.
func snakeKeys(r map[string]any) map[string]any {
	names := map[string]string{"sourceLabels": "source_labels", "targetLabel": "target_label"}
	out := map[string]any{}
	for k, v := range r {
		if n, ok := names[k]; ok {
			k = n
		}
		out[k] = v
	}
	return out
}

// startRelay runs a relay on loopback and returns its metrics address.
func startRelay(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	metricsPort := testutil.FreePort(t)
	cfg := &config.Relay{
		Version:          config.Version,
		Realm:            "prometheus.test",
		Listeners:        []config.Listener{{Name: "udp", Protocol: config.UDP, Port: testutil.FreePort(t)}},
		RelayPortRange:   config.PortRange{Min: 30000, Max: 30100},
		Addresses:        config.Addresses{Bind: []string{"127.0.0.1"}},
		Internal:         config.Internal{Address: "127.0.0.1", MetricsPort: metricsPort, HealthPort: testutil.FreePort(t)},
		DrainGracePeriod: config.Duration{Duration: 100 * time.Millisecond},
	}
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, config.RelayFile)
	writeFile(t, path, string(data))

	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Options{ConfigPath: path, LogOutput: io.Discard, Version: "test", NodeName: "-",
			Started: func(*relay.Relay) { close(started) }})
	}()
	select {
	case <-started:
	case err := <-done:
		cancel()
		t.Fatalf("relay did not start: %v", err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(metricsPort))
}

// startPrometheus runs prometheus with the config until the test ends and
// returns its HTTP address once it is ready.
func startPrometheus(t *testing.T, bin, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfgFile, cfg)
	mustRun(t, "promtool", "check", "config", cfgFile)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t)))
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	logs, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			data, _ := os.ReadFile(logs.Name())
			t.Logf("prometheus config:\n%s\nprometheus log:\n%s", cfg, data)
		}
	})
	poll(t, "prometheus ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return addr
}

// queryValue runs an instant query and returns the first sample's value,
// "" when the result is empty.
func queryValue(t *testing.T, addr, query string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Status != "success" {
		t.Fatalf("query %s: %s", query, body.Error)
	}
	if len(body.Data.Result) == 0 {
		return ""
	}
	return fmt.Sprint(body.Data.Result[0].Value[1])
}

// waitForQuery polls until the query has a result, equal to want unless want is "".
func waitForQuery(t *testing.T, addr, query, want string) {
	t.Helper()
	var got string
	poll(t, "query "+query, func() bool {
		got = queryValue(t, addr, query)
		return got != "" && (want == "" || got == want)
	})
}

// poll checks every 200ms, for at most a minute (several scrapes at 1s).
func poll(t *testing.T, what string, check func() bool) {
	t.Helper()
	for range 300 {
		if check() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("gave up after 60s: %s", what)
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t)))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
