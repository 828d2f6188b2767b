package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// Operator metrics, served with controller-runtime's on the operator's
// metrics endpoint.
var (
	credentialRotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnpike_operator_credential_rotations_total",
		Help: "Credential rotation steps (a new secret staged for relays, or published to apps), by result.",
	}, []string{"step", "result"})
	issueRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnpike_operator_issue_requests_total",
		Help: "Requests to the credential issuing endpoint, by result.",
	}, []string{"result"})
)

func init() {
	metrics.Registry.MustRegister(credentialRotations, issueRequests)
	for _, step := range []string{"stage", "publish"} {
		for _, result := range []string{"success", "failure"} {
			credentialRotations.WithLabelValues(step, result)
		}
	}
}

// credentialStates reports TurnCredentials by type and the reason of their
// Ready condition, counted from the cache at scrape time, so the figure is
// never stale and deleted credentials need no bookkeeping.
type credentialStates struct{ reader client.Reader }

var credentialsDesc = prometheus.NewDesc("turnpike_operator_credentials",
	"TurnCredentials by type and the reason of their Ready condition.", []string{"type", "reason"}, nil)

func (c credentialStates) Describe(ch chan<- *prometheus.Desc) { ch <- credentialsDesc }

func (c credentialStates) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list turnpikev1.TurnCredentialList
	if err := c.reader.List(ctx, &list); err != nil {
		return
	}
	counts := map[[2]string]int{}
	for _, tc := range list.Items {
		reason := "Pending"
		if cond := meta.FindStatusCondition(tc.Status.Conditions, turnpikev1.ConditionReady); cond != nil {
			reason = cond.Reason
		}
		counts[[2]string{string(tc.Spec.Type), reason}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(credentialsDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}
