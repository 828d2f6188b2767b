package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	relayconfig "github.com/turnpike-dev/turnpike/relay/config"
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

// TestIssuerPrefersTheCallerZone runs relays on 12 nodes in two zones: the
// issuing endpoint gives a caller nodes of the zone it names (?zone=), else
// of the zone of the node its pod runs on, which the API server puts in a
// pod's token, else nodes of any zone.
func TestIssuerPrefersTheCallerZone(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "zones")
	zoneOf := map[string]string{} // URI host -> zone
	for i := range 12 {
		zone := []string{"zone-a", "zone-b"}[i/6]
		ip := fmt.Sprintf("203.0.113.%d", 200+i)
		newNode(t, fmt.Sprintf("zones-%02d", i), map[string]string{"suite": "zones", corev1.LabelTopologyZone: zone}, externalIP(ip))
		zoneOf[ip] = zone
	}
	ts := minimalTurnServer(ns, "relay", "zones", 3478)
	ts.Spec.URLNodesPerFamily = 2
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay DaemonSet", func() error { _, err := getRelayObjects(ts); return err })
	for i := range 12 {
		createRelayPod(t, ts, fmt.Sprintf("zones-%02d", i), true)
	}
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "sfu", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type: turnpikev1.CredentialStatic, Username: "sfu"},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	publishFirstSecret(t, tc)
	eventually(t, "issued", func() error { _, err := getSecret(ns, "sfu"); return err })

	unbound := env.ServiceAccountToken(t, ns, "app")
	env.GrantUse(t, ns, "app", "sfu")
	srv := httptest.NewServer((&Issuer{Client: env.Client, Now: clock.Now}).Handler())
	defer srv.Close()
	zonesOf := func(token, query string) map[string]int {
		t.Helper()
		resp, body := get(t, srv.URL+"/api/v1/namespaces/"+ns+"/turncredentials/sfu?"+query, token)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("?%s: %d %s", query, resp.StatusCode, body)
		}
		var r issueResponse
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		zones := map[string]int{}
		for _, u := range r.URIs {
			host := strings.Split(u, ":")[1] // turn:203.0.113.2xx:3478?transport=udp
			zones[zoneOf[host]]++
		}
		return zones
	}
	for u := range 10 {
		if z := zonesOf(unbound, fmt.Sprintf("username=user-%d&zone=zone-b", u)); z["zone-b"] != 2 {
			t.Fatalf("user-%d asking for zone-b got nodes of %v", u, z)
		}
	}

	// A token of a pod on a zone-a node: zone-a, unless the caller names another.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec:       corev1.PodSpec{NodeName: "zones-01", ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "x"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for u := range 10 {
		if z := zonesOf(tr.Status.Token, fmt.Sprintf("username=user-%d", u)); z["zone-a"] != 2 {
			t.Fatalf("user-%d from a pod on a zone-a node got nodes of %v", u, z)
		}
		if z := zonesOf(tr.Status.Token, fmt.Sprintf("username=user-%d&zone=zone-b", u)); z["zone-b"] != 2 {
			t.Fatalf("user-%d from a pod on a zone-a node, asking for zone-b, got nodes of %v", u, z)
		}
	}
	// Without a zone, users spread over both.
	all := map[string]int{}
	for u := range 10 {
		for zone, n := range zonesOf(unbound, fmt.Sprintf("username=user-%d", u)) {
			all[zone] += n
		}
	}
	if all["zone-a"] == 0 || all["zone-b"] == 0 {
		t.Fatalf("10 users without a zone got nodes of %v only", all)
	}
}

// TestIssuerPrefersLessLoadedRelays runs a /status server for each of 6
// relays on loopback addresses: once the endpoint has read them, a user
// whose two nodes report many allocations is given two idle ones instead.
func TestIssuerPrefersLessLoadedRelays(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "loads")
	allocations := map[string]*atomic.Int64{} // by node
	var port int
	for i := range 6 {
		node, host := fmt.Sprintf("loads-%02d", i), fmt.Sprintf("127.0.0.%d", 10+i)
		allocations[node] = &atomic.Int64{}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port // the relays of a TurnServer share the health port
		srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(relayconfig.Status{Ready: true, Allocations: int(allocations[node].Load())})
		})}}
		srv.Start()
		defer srv.Close()
		newNode(t, node, map[string]string{"suite": "loads"}, externalIP(fmt.Sprintf("203.0.113.%d", 220+i)),
			corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: host})
	}
	ts := minimalTurnServer(ns, "relay", "loads", 3478)
	ts.Spec.URLNodesPerFamily, ts.Spec.HealthPort = 2, int32(port)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay DaemonSet", func() error { _, err := getRelayObjects(ts); return err })
	for i := range 6 {
		createRelayPod(t, ts, fmt.Sprintf("loads-%02d", i), true)
	}
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "sfu", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type: turnpikev1.CredentialStatic, Username: "sfu"},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	publishFirstSecret(t, tc)
	eventually(t, "issued", func() error { _, err := getSecret(ns, "sfu"); return err })

	token := env.ServiceAccountToken(t, ns, "app")
	env.GrantUse(t, ns, "app", "sfu")
	loads := newRelayLoads(cachedObjects{reader: env.Client}, loopbackRelayStatus, time.Hour)
	srv := httptest.NewServer((&Issuer{Client: env.Client, Now: clock.Now, loads: loads}).Handler())
	defer srv.Close()
	nodesOf := func() []string {
		t.Helper()
		resp, body := get(t, srv.URL+"/api/v1/namespaces/"+ns+"/turncredentials/sfu?username=alice", token)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		var r issueResponse
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		var nodes []string
		for _, u := range r.URIs { // turn:203.0.113.22x:3478?transport=udp
			var n int
			fmt.Sscanf(strings.TrimPrefix(u, "turn:203.0.113."), "%d", &n)
			nodes = append(nodes, fmt.Sprintf("loads-%02d", n-220))
		}
		return nodes
	}
	own := nodesOf()
	if len(own) != 2 {
		t.Fatalf("alice got nodes %v, want 2", own)
	}
	for _, n := range own {
		allocations[n].Store(300)
	}
	if err := loads.readAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := loads.of(client.ObjectKeyFromObject(ts)); len(got) != 6 || got[own[0]] != 300 {
		t.Fatalf("loads read: %v, want 6 relays, %s at 300", got, own[0])
	}
	if got := nodesOf(); len(got) != 2 || slices.Contains(got, own[0]) || slices.Contains(got, own[1]) {
		t.Fatalf("alice got %v while her nodes %v hold 300 allocations each", got, own)
	}
	for _, n := range own {
		allocations[n].Store(0)
	}
	if err := loads.readAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := nodesOf(); !slices.Equal(got, own) {
		t.Fatalf("alice got %v once her nodes %v are idle again", got, own)
	}
}
