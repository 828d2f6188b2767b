package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/restauth"
)

// TestIssuer calls the issuing endpoint with real service-account tokens
// that the API server minted and reviews, and RBAC that it evaluates.
func TestIssuer(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "issuer")
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "rest", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{
			TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type:          turnpikev1.CredentialSharedSecret, TTL: &metav1.Duration{Duration: 10 * time.Minute},
		},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	publishFirstSecret(t, tc)
	eventually(t, "issued", func() error { _, err := getSecret(ns, render.OutputSecretName(tc)); return err })
	secret := stateOf(t, tc).Current

	allowed, denied := env.ServiceAccountToken(t, ns, "app"), env.ServiceAccountToken(t, ns, "stranger")
	env.GrantUse(t, ns, "app", "rest")

	issuer := &Issuer{Client: env.Client, Now: clock.Now}
	srv := httptest.NewServer(issuer.Handler())
	defer srv.Close()
	url := srv.URL + "/api/v1/namespaces/" + ns + "/turncredentials/rest?username=alice"

	tests := []struct {
		name, token string
		url         string
		status      int
		result      string
	}{
		{"no token", "", url, http.StatusUnauthorized, "unauthenticated"},
		{"forged token", "not-a-token", url, http.StatusUnauthorized, "unauthenticated"},
		{"token without access", denied, url, http.StatusForbidden, "forbidden"},
		{"access to another credential only", allowed, srv.URL + "/api/v1/namespaces/" + ns + "/turncredentials/other", http.StatusForbidden, "forbidden"},
		{"colon in username", allowed, url + ":x", http.StatusBadRequest, "bad_request"},
		{"allowed", allowed, url, http.StatusOK, "issued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(issueRequests.WithLabelValues(tt.result))
			resp, body := get(t, tt.url, tt.token)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if got := testutil.ToFloat64(issueRequests.WithLabelValues(tt.result)) - before; got != 1 {
				t.Errorf("%s requests counted %v times", tt.result, got)
			}
			if tt.status != http.StatusOK {
				return
			}
			var r issueResponse
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatal(err)
			}
			wantUser := fmt.Sprintf("%d:alice", clock.Now().Add(10*time.Minute).Unix())
			if r.Username != wantUser || r.Password != restauth.Password(secret, wantUser) || r.TTL != 600 || r.URIs == nil {
				t.Fatalf("response %+v, want username %s and its REST password", r, wantUser)
			}
		})
	}
}

func get(t *testing.T, url, token string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
