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

	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

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
	eventually(t, "issued", func() error { _, err := getSecret(ns, stateSecretName(tc)); return err })
	secret := stateOf(t, tc).Current

	allowed, denied := serviceAccountToken(t, ns, "app"), serviceAccountToken(t, ns, "stranger")
	grantUse(t, ns, "app", "rest")

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

// serviceAccountToken creates a ServiceAccount and asks the API server for a token of it.
func serviceAccountToken(t *testing.T, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if err := env.Client.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// grantUse lets a ServiceAccount use one TurnCredential, as a user would with a Role.
func grantUse(t *testing.T, ns, sa, credential string) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "use-" + credential, Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"turnpike.dev"}, Resources: []string{"turncredentials"},
			ResourceNames: []string{credential}, Verbs: []string{IssueVerb}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "use-" + credential, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
	}
	if err := env.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
}
