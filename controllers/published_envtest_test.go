package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
)

// setPodReady plays the kubelet reporting a relay pod's readiness.
func setPodReady(t *testing.T, ts *turnpikev1.TurnServer, node string, ready bool) {
	t.Helper()
	eventually(t, "pod readiness", func() error {
		pod := &corev1.Pod{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ts.Namespace, Name: ts.Name + "-relay-" + node}, pod); err != nil {
			return err
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
		return env.Client.Status().Update(context.Background(), pod)
	})
}

// iceURLs reads the URLs of a credential Secret's iceServers.json.
func iceURLs(ns, secret string) ([]string, string, error) {
	s, err := getSecret(ns, secret)
	if err != nil {
		return nil, "", err
	}
	var ice []render.ICEServer
	if err := json.Unmarshal(s.Data[render.SecretKeyICEServers], &ice); err != nil || len(ice) != 1 {
		return nil, "", fmt.Errorf("iceServers.json %s: %v", s.Data[render.SecretKeyICEServers], err)
	}
	return ice[0].URLs, s.ResourceVersion, nil
}

// TestBoundedURLs runs a TurnServer on 25 nodes that publishes 2 per
// family: the status names at most 20 nodes, apps get 2 nodes' URLs that
// change only when one of those stops serving, and the issuing endpoint
// spreads users over all nodes.
func TestBoundedURLs(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "bounded")
	const nodes = 25
	for i := range nodes {
		newNode(t, fmt.Sprintf("bounded-%02d", i), map[string]string{"suite": "bounded"}, externalIP(fmt.Sprintf("203.0.113.%d", 100+i)))
	}
	ts := minimalTurnServer(ns, "relay", "bounded", 3478)
	ts.Spec.URLNodesPerFamily = 2
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every node needs attention, 20 named", func() error {
		st := getTurnServer(t, ts).Status
		if st.NodesNeedingAttention != nodes || len(st.AttentionNodes) != turnpikev1.MaxAttentionNodes {
			return fmt.Errorf("%d needing attention, %d named", st.NodesNeedingAttention, len(st.AttentionNodes))
		}
		return nil
	})
	for i := range nodes {
		createRelayPod(t, ts, fmt.Sprintf("bounded-%02d", i), true)
	}
	var urls []string
	eventually(t, "two nodes' URLs", func() error {
		st := getTurnServer(t, ts).Status
		if urls = st.URLs; len(urls) != 2 || st.NodesNeedingAttention != 0 || len(st.AttentionNodes) != 0 {
			return fmt.Errorf("urls %v, %d nodes needing attention", urls, st.NodesNeedingAttention)
		}
		return nil
	})

	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "sfu", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{
			TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type:          turnpikev1.CredentialStatic, Username: "sfu",
		},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	publishFirstSecret(t, tc)
	var mine []string
	var version string
	eventually(t, "apps get two serving nodes of their own", func() (err error) {
		if mine, version, err = iceURLs(ns, "sfu"); err != nil {
			return err
		}
		if len(mine) != 2 {
			return fmt.Errorf("iceServers.json %v, want 2 URLs", mine)
		}
		return nil
	})

	// A node neither the status nor apps name stops serving: nothing they read changes.
	nodeOf := func(url string) string { // turn:203.0.113.1xx:3478?... -> bounded-xx
		var n int
		fmt.Sscanf(strings.TrimPrefix(url, "turn:203.0.113."), "%d", &n)
		return fmt.Sprintf("bounded-%02d", n-100)
	}
	named := []string{nodeOf(urls[0]), nodeOf(urls[1]), nodeOf(mine[0]), nodeOf(mine[1])}
	other := "bounded-00"
	for i := 1; slices.Contains(named, other); i++ {
		other = fmt.Sprintf("bounded-%02d", i)
	}
	setPodReady(t, ts, other, false)
	eventually(t, "the node needs attention", func() error {
		if n := getTurnServer(t, ts).Status.AttentionNodes; len(n) != 1 || n[0].Name != other {
			return fmt.Errorf("attention nodes %+v, want %s", n, other)
		}
		return nil
	})
	if got := getTurnServer(t, ts).Status.URLs; !slices.Equal(got, urls) {
		t.Fatalf("URLs changed from %v to %v when a node apps do not use stopped serving", urls, got)
	}
	if _, v, err := iceURLs(ns, "sfu"); err != nil || v != version {
		t.Fatalf("the apps' Secret was written (%v)", err)
	}

	// A node apps are given stops serving: another takes its place, the other stays.
	chosen := []string{nodeOf(mine[0]), nodeOf(mine[1])}
	setPodReady(t, ts, chosen[0], false)
	eventually(t, "apps get a replacement", func() error {
		got, _, err := iceURLs(ns, "sfu")
		if err != nil {
			return err
		}
		if len(got) != 2 || slices.Contains(got, mine[0]) || !slices.Contains(got, mine[1]) {
			return fmt.Errorf("iceServers.json %v after %s stopped, was %v", got, chosen[0], mine)
		}
		return nil
	})

	// The issuing endpoint picks per user from every serving node.
	token := env.ServiceAccountToken(t, ns, "app")
	env.GrantUse(t, ns, "app", "sfu")
	srv := httptest.NewServer((&Issuer{Client: env.Client, Now: clock.Now}).Handler())
	defer srv.Close()
	issue := func(user string) []string {
		t.Helper()
		resp, body := get(t, srv.URL+"/api/v1/namespaces/"+ns+"/turncredentials/sfu?username="+user, token)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("issue for %s: %d %s", user, resp.StatusCode, body)
		}
		var r issueResponse
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		return r.URIs
	}
	seen := map[string]bool{}
	for u := range 20 {
		uris := issue(fmt.Sprintf("user-%d", u))
		if len(uris) != 2 {
			t.Fatalf("user-%d got %v, want 2 URIs", u, uris)
		}
		for _, uri := range uris {
			if n := nodeOf(uri); n == other || n == chosen[0] {
				t.Fatalf("user-%d was given %s, whose relay is not ready", u, n)
			}
			seen[uri] = true
		}
		if again := issue(fmt.Sprintf("user-%d", u)); !slices.Equal(again, uris) {
			t.Fatalf("user-%d got %v, then %v", u, uris, again)
		}
	}
	if len(seen) < 8 {
		t.Fatalf("20 users were sent to only %d of %d serving nodes", len(seen), nodes-2)
	}
}

// settle waits until nothing has been written to ns for a second (at most
// 20 s) and returns what has been written to it in all.
func settle(t testing.TB, ns string) writeTotals {
	t.Helper()
	last, since := writes.in(ns), time.Now()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cur := writes.in(ns); cur != last {
			last, since = cur, time.Now()
		} else if time.Since(since) > time.Second {
			return cur
		}
	}
	t.Fatalf("namespace %s: writes did not settle: %+v", ns, last)
	return last
}

// TestOneNodeChangeIsSmall changes the address of one of 20 nodes of a
// TurnServer with 5 credentials, none of whose Secrets name that node, and
// counts what the operator writes because of it: neither relay.yaml, nor the
// status, nor a credential Secret names that node's address, so only its
// relay pod's annotation changes.
func TestOneNodeChangeIsSmall(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "one-node")
	const nodes = 20
	var all []*corev1.Node
	for i := range nodes {
		all = append(all, newNode(t, fmt.Sprintf("one-node-%02d", i), map[string]string{"suite": "one-node"}, externalIP(fmt.Sprintf("203.0.113.%d", 130+i))))
	}
	ts := minimalTurnServer(ns, "relay", "one-node", 3478)
	ts.Spec.URLNodesPerFamily = 2
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay DaemonSet", func() error { _, err := getRelayObjects(ts); return err })
	for _, n := range all {
		createRelayPod(t, ts, n.Name, true)
	}
	for i := range 5 {
		tc := &turnpikev1.TurnCredential{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
				Type: turnpikev1.CredentialStatic, Username: fmt.Sprintf("app-%d", i)},
		}
		if err := env.Client.Create(ctx, tc); err != nil {
			t.Fatal(err)
		}
		publishFirstSecret(t, tc)
		eventually(t, "issued", func() error { _, err := getSecret(ns, tc.Name); return err })
	}
	var urls []string
	eventually(t, "URLs of two nodes", func() error {
		if urls = getTurnServer(t, ts).Status.URLs; len(urls) != 2 {
			return fmt.Errorf("urls %v", urls)
		}
		return nil
	})
	for i := range 5 {
		mine, _, err := iceURLs(ns, fmt.Sprintf("app-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, mine...)
	}
	before, passes := settle(t, ns), writes.credentialPasses(ns)

	// A node neither the status nor any app names gets a new address.
	changed := all[0]
	for i := 1; slices.ContainsFunc(urls, func(u string) bool { return strings.Contains(u, changed.Status.Addresses[0].Address+":") }); i++ {
		changed = all[i]
	}
	changed.Status.Addresses = []corev1.NodeAddress{externalIP("192.0.2.200")}
	if err := env.Client.Status().Update(ctx, changed); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relay pod has the new address", func() error {
		if got, err := nodeEntryOf(ts, changed.Name); err != nil || got != "&{[192.0.2.200] ExternalIP}" {
			return fmt.Errorf("node entry %s (%v)", got, err)
		}
		return nil
	})
	after := settle(t, ns)
	n, size := after.writes-before.writes, after.bytes-before.bytes
	t.Logf("one node's new address: %d writes, %d bytes", n, size)
	// The issue's goal is at most 5 writes and 64 KiB at any size; by design
	// it is one small patch of the node's relay pod, and nothing else.
	if n != 1 || size > 1<<10 {
		t.Fatalf("one node's new address cost %d writes and %d bytes, want 1 write of its relay pod's annotation", n, size)
	}
	if woken := writes.credentialPasses(ns) - passes; woken != 0 {
		t.Fatalf("a node no credential names woke credentials %d times", woken)
	}
}

// TestCredentialsNameTheirOwnNodes gives 10 credentials of a TurnServer on
// 20 nodes 2 nodes each, and stops the relay of a node the TurnServer's
// status.urls name: only the credentials whose iceServers.json names it are
// woken and rewritten. When every credential carried status.urls, such a
// change rewrote every credential's Secret.
func TestCredentialsNameTheirOwnNodes(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "own-nodes")
	const nodes, credentials = 20, 10
	for i := range nodes {
		newNode(t, fmt.Sprintf("own-nodes-%02d", i), map[string]string{"suite": "own-nodes"}, externalIP(fmt.Sprintf("203.0.113.%d", 160+i)))
	}
	ts := minimalTurnServer(ns, "relay", "own-nodes", 3478)
	ts.Spec.URLNodesPerFamily = 2
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay DaemonSet", func() error { _, err := getRelayObjects(ts); return err })
	for i := range nodes {
		createRelayPod(t, ts, fmt.Sprintf("own-nodes-%02d", i), true)
	}
	for i := range credentials {
		tc := &turnpikev1.TurnCredential{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
				Type: turnpikev1.CredentialStatic, Username: fmt.Sprintf("app-%d", i)},
		}
		if err := env.Client.Create(ctx, tc); err != nil {
			t.Fatal(err)
		}
		publishFirstSecret(t, tc)
	}
	var urls []string
	eventually(t, "every node serving, URLs of two", func() error {
		st := getTurnServer(t, ts).Status
		if urls = st.URLs; len(urls) != 2 || st.NodesNeedingAttention != 0 {
			return fmt.Errorf("urls %v, %d nodes needing attention", urls, st.NodesNeedingAttention)
		}
		return nil
	})
	perCredential := map[string][]string{}
	eventually(t, "every credential issued", func() error {
		for i := range credentials {
			name := fmt.Sprintf("app-%d", i)
			got, _, err := iceURLs(ns, name)
			if err != nil || len(got) != 2 {
				return fmt.Errorf("%s: %v (%v)", name, got, err)
			}
			perCredential[name] = got
		}
		return nil
	})
	distinct := map[string]bool{}
	for _, u := range perCredential {
		distinct[strings.Join(u, " ")] = true
	}
	if len(distinct) < 4 {
		t.Fatalf("10 credentials share %d sets of URLs, want them spread: %v", len(distinct), perCredential)
	}

	nodeOf := func(url string) string { // turn:203.0.113.1xx:3478?... -> own-nodes-xx
		var n int
		fmt.Sscanf(strings.TrimPrefix(url, "turn:203.0.113."), "%d", &n)
		return fmt.Sprintf("own-nodes-%02d", n-160)
	}
	// stop stops the relay on the node of url, checks that only the
	// credentials naming it got other URLs, and returns what that cost.
	stop := func(url string) (affected []string, n int64, woken int) {
		t.Helper()
		for name, u := range perCredential {
			if slices.Contains(u, url) {
				affected = append(affected, name)
			}
		}
		before, passes := settle(t, ns), writes.credentialPasses(ns)
		setPodReady(t, ts, nodeOf(url), false)
		eventually(t, "credentials drop the node", func() error {
			for _, name := range affected {
				if got, _, err := iceURLs(ns, name); err != nil || slices.Contains(got, url) {
					return fmt.Errorf("%s: iceServers.json %v (%v)", name, got, err)
				}
			}
			return nil
		})
		after := settle(t, ns)
		for name, was := range perCredential {
			got, _, err := iceURLs(ns, name)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || (!slices.Contains(affected, name) && !slices.Equal(got, was)) {
				t.Fatalf("%s: iceServers.json %v, was %v, after %s stopped serving", name, got, was, nodeOf(url))
			}
			perCredential[name] = got
		}
		n, woken = after.writes-before.writes, writes.credentialPasses(ns)-passes
		t.Logf("%s stopped serving, named by %d credentials: %d writes, %d bytes, %d credential passes", nodeOf(url), len(affected), n, after.bytes-before.bytes, woken)
		return affected, n, woken
	}

	// A node of status.urls: the status is written once, and the Secrets of
	// the credentials naming that node (none, or a few), not all.
	affected, n, woken := stop(urls[0])
	if slices.Contains(getTurnServer(t, ts).Status.URLs, urls[0]) {
		t.Fatalf("status.urls still name %s", nodeOf(urls[0]))
	}
	if n > int64(1+len(affected)) || woken > len(affected) {
		t.Fatalf("%d writes and %d credential passes, want at most %d and %d", n, woken, 1+len(affected), len(affected))
	}

	// A node some credential names, and status.urls do not.
	var named string
	for _, u := range perCredential {
		if !slices.Contains(getTurnServer(t, ts).Status.URLs, u[0]) {
			named = u[0]
		}
	}
	// The status is written too (the node needs attention). Each affected
	// credential's pass wakes it once more: its own Secret write is an
	// event of a Secret it owns.
	affected, n, woken = stop(named)
	if len(affected) == 0 || n != int64(1+len(affected)) || woken > 2*len(affected) {
		t.Fatalf("%d writes and %d credential passes for %d credentials naming the node, want %d and at most %d",
			n, woken, len(affected), 1+len(affected), 2*len(affected))
	}
}
