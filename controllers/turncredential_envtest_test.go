package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// The suite's reconcilers share `clock`. These tests move it and then nudge
// the TurnCredential (an annotation the controller ignores but is woken by),
// so every reconcile runs in the manager, as in production.

func kick(t testing.TB, tc *turnpikev1.TurnCredential) {
	t.Helper()
	eventually(t, "kick", func() error {
		cur := &turnpikev1.TurnCredential{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(tc), cur); err != nil {
			return err
		}
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations["test/kick"] = clock.Now().String()
		return env.Client.Update(context.Background(), cur)
	})
}

// publishFirstSecret waits for the first secret to be staged, then moves the
// clock past the suite's staging delay so the controller publishes it.
func publishFirstSecret(t testing.TB, tc *turnpikev1.TurnCredential) {
	t.Helper()
	eventually(t, "first secret staged", func() error {
		s, err := getSecret(tc.Namespace, render.StateSecretName(tc))
		if err != nil {
			return err
		}
		if st, err := render.DecodeCredentialState(s.Data); err != nil || st.Next == "" {
			return fmt.Errorf("not staged: %v", err)
		}
		return nil
	})
	if _, err := getSecret(tc.Namespace, render.OutputSecretName(tc)); err == nil {
		t.Fatal("apps got the first secret before relays had time to load it")
	}
	clock.Advance(time.Hour)
	kick(t, tc)
}

func getCredential(t *testing.T, tc *turnpikev1.TurnCredential) *turnpikev1.TurnCredential {
	t.Helper()
	cur := &turnpikev1.TurnCredential{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(tc), cur); err != nil {
		t.Fatal(err)
	}
	return cur
}

func getSecret(ns, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	return s, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s)
}

// bundleOf reads the relays' credentials.yaml of a TurnServer.
func bundleOf(ts *turnpikev1.TurnServer) (*config.Credentials, error) {
	s, err := getSecret(ts.Namespace, ts.Name+"-relay-credentials")
	if err != nil {
		return nil, err
	}
	return config.ParseCredentials(s.Data[config.CredentialsFile])
}

// userKeys lists a bundle's keys for username as "key" or "key until T".
func userKeys(b *config.Credentials, username string) []string {
	var out []string
	for _, u := range b.Users {
		if u.Username != username {
			continue
		}
		if u.NotAfter != nil {
			out = append(out, u.Key+" until "+u.NotAfter.UTC().Format(time.RFC3339))
		} else {
			out = append(out, u.Key)
		}
	}
	slices.Sort(out)
	return out
}

func TestStaticCredentialRotation(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cred-static")
	newNode(t, "cred-static-a", map[string]string{"suite": "cred-static"}, externalIP("198.51.100.60"))
	ts := minimalTurnServer(ns, "relay", "cred-static", 3478)
	ts.Spec.Listeners[0].Port = 3490 // nodes are shared across tests; keep ports apart
	ts.Spec.MetricsPort, ts.Spec.HealthPort = 9651, 9652
	ts.Spec.RelayPortRange = turnpikev1.PortRange{Min: 41000, Max: 41999}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "sfu", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{
			TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type:          turnpikev1.CredentialStatic, Username: "sfu",
			Rotation: &turnpikev1.Rotation{Interval: metav1.Duration{Duration: 24 * time.Hour}, Overlap: metav1.Duration{Duration: 2 * time.Hour}},
		},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	// A relay pod becomes ready, so the TurnServer publishes URLs.
	eventually(t, "relay DaemonSet", func() error { _, err := getRelayObjects(ts); return err })
	createRelayPod(t, ts, "cred-static-a", true)
	publishFirstSecret(t, tc)

	// Issued: apps get a password and a complete iceServers.json; relays get only its key.
	var password1 string
	eventually(t, "issued", func() error {
		out, err := getSecret(ns, "sfu")
		if err != nil {
			return err
		}
		password1 = string(out.Data[render.SecretKeyPassword])
		var ice []render.ICEServer
		if err := json.Unmarshal(out.Data[render.SecretKeyICEServers], &ice); err != nil {
			return err
		}
		want := render.ICEServer{URLs: []string{"turn:198.51.100.60:3490?transport=udp"}, Username: "sfu", Credential: password1}
		if len(ice) != 1 || fmt.Sprint(ice[0]) != fmt.Sprint(want) || string(out.Data[render.SecretKeyUsername]) != "sfu" {
			return fmt.Errorf("iceServers.json %s", out.Data[render.SecretKeyICEServers])
		}
		b, err := bundleOf(ts)
		if err != nil {
			return err
		}
		if keys := userKeys(b, "sfu"); !slices.Equal(keys, []string{render.LongTermKey("sfu", "example.org", password1)}) {
			return fmt.Errorf("bundle keys %v", keys)
		}
		return expectCredential(getCredential(t, tc), metav1.ConditionTrue, render.ReasonIssued, 1)
	})
	if len(password1) < 40 {
		t.Fatalf("password %q is too short to be 32 random bytes", password1)
	}
	s, _ := getSecret(ns, ts.Name+"-relay-credentials")
	if bytes.Contains(s.Data[config.CredentialsFile], []byte(password1)) {
		t.Fatal("the relay bundle holds the plaintext password")
	}
	gen1 := mustBundle(t, ts).Generation

	staged := testutil.ToFloat64(credentialRotations.WithLabelValues("stage", "success"))
	published := testutil.ToFloat64(credentialRotations.WithLabelValues("publish", "success"))

	// The interval passes: the new password is staged on relays, apps keep the old one.
	clock.Advance(24 * time.Hour)
	kick(t, tc)
	var password2 string
	eventually(t, "staged", func() error {
		st := stateOf(t, tc)
		if st.Next == "" {
			return fmt.Errorf("nothing staged")
		}
		password2 = st.Next
		if keys := userKeys(mustBundle(t, ts), "sfu"); len(keys) != 2 {
			return fmt.Errorf("bundle keys %v, want current and staged", keys)
		}
		out, _ := getSecret(ns, "sfu")
		if string(out.Data[render.SecretKeyPassword]) != password1 {
			return fmt.Errorf("apps got the staged password before relays had time to load it")
		}
		return nil
	})
	if mustBundle(t, ts).Generation <= gen1 {
		t.Error("bundle generation did not increase")
	}

	// The staging delay passes: apps get the new password, the old one stays valid for the overlap.
	clock.Advance(time.Hour)
	publishedAt := clock.Now()
	kick(t, tc)
	eventually(t, "published", func() error {
		out, _ := getSecret(ns, "sfu")
		if string(out.Data[render.SecretKeyPassword]) != password2 {
			return fmt.Errorf("apps still have the old password")
		}
		want := []string{
			render.LongTermKey("sfu", "example.org", password1) + " until " + publishedAt.Add(2*time.Hour).UTC().Format(time.RFC3339),
			render.LongTermKey("sfu", "example.org", password2),
		}
		slices.Sort(want)
		if keys := userKeys(mustBundle(t, ts), "sfu"); !slices.Equal(keys, want) {
			return fmt.Errorf("bundle keys %v, want %v", keys, want)
		}
		cur := getCredential(t, tc)
		// The API server stores seconds.
		at := publishedAt.Truncate(time.Second)
		if cur.Status.LastRotationTime == nil || !cur.Status.LastRotationTime.Time.Equal(at) ||
			!cur.Status.NextRotationTime.Time.Equal(at.Add(24*time.Hour)) {
			return fmt.Errorf("rotation times %v %v", cur.Status.LastRotationTime, cur.Status.NextRotationTime)
		}
		return expectCredential(cur, metav1.ConditionTrue, render.ReasonIssued, 2)
	})

	// kubectl describe shows the rotation.
	eventually(t, "rotation Events", func() error {
		for _, reason := range []string{render.ReasonIssued, render.EventRotationStarted, render.EventRotationFinished} {
			if _, err := recordedEvents(ns, tc.Name, corev1.EventTypeNormal, reason, ""); err != nil {
				return err
			}
		}
		return nil
	})

	if d := testutil.ToFloat64(credentialRotations.WithLabelValues("stage", "success")) - staged; d != 1 {
		t.Errorf("rotations{step=stage,result=success} went up by %v, want 1", d)
	}
	if d := testutil.ToFloat64(credentialRotations.WithLabelValues("publish", "success")) - published; d != 1 {
		t.Errorf("rotations{step=publish,result=success} went up by %v, want 1", d)
	}
	// turnpike_operator_credentials counts this one as Static/Issued.
	if n := credentialGauge(t, "Static", render.ReasonIssued); n < 1 {
		t.Errorf("turnpike_operator_credentials{type=Static,reason=Issued} = %v", n)
	}

	// A restarted operator (fresh reconcilers, same clock) in the middle of the
	// overlap changes nothing: no second rotation, no lost previous password.
	before := stateOf(t, tc)
	restarted := &TurnCredentialReconciler{Client: env.Client, Now: clock.Now, StagingDelay: time.Hour}
	clock.Advance(time.Hour)
	if _, err := restarted.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(tc)}); err != nil {
		t.Fatal(err)
	}
	if after := stateOf(t, tc); after != before {
		t.Fatalf("restart mid-overlap changed the state:\n%+v\n%+v", before, after)
	}

	// The overlap ends: the previous key leaves the bundle.
	clock.Advance(time.Hour)
	kick(t, tc)
	eventually(t, "previous expired", func() error {
		if keys := userKeys(mustBundle(t, ts), "sfu"); !slices.Equal(keys, []string{render.LongTermKey("sfu", "example.org", password2)}) {
			return fmt.Errorf("bundle keys %v", keys)
		}
		return nil
	})

	// Deleting the TurnCredential takes its keys off the relays.
	if err := env.Client.Delete(ctx, tc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "keys removed", func() error {
		if keys := userKeys(mustBundle(t, ts), "sfu"); len(keys) != 0 {
			return fmt.Errorf("bundle keys %v after delete", keys)
		}
		return nil
	})
}

func TestManualRotationAndMissingTurnServer(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cred-rest")
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "rest", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{
			TurnServerRef: turnpikev1.LocalObjectReference{Name: "absent"},
			Type:          turnpikev1.CredentialSharedSecret, SecretName: "rest-for-apps",
			TTL: &metav1.Duration{Duration: time.Hour},
		},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	publishFirstSecret(t, tc)
	// No TurnServer: the secret is issued, but the condition says nobody accepts it.
	eventually(t, "issued without a TurnServer", func() error {
		out, err := getSecret(ns, "rest-for-apps")
		if err != nil {
			return err
		}
		if len(out.Data[render.SecretKeySharedSecret]) == 0 || string(out.Data[render.SecretKeyICEServers]) != `[{"urls":[]}]` {
			return fmt.Errorf("output %v", out.Data)
		}
		return expectCredential(getCredential(t, tc), metav1.ConditionFalse, render.ReasonTurnServerNotFound, 1)
	})
	first := stateOf(t, tc).Current

	// turnpike.dev/rotate with a new value rotates once.
	setAnnotation := func(v string) {
		eventually(t, "annotate", func() error {
			cur := getCredential(t, tc)
			cur.Annotations = map[string]string{turnpikev1.AnnotationRotate: v}
			return env.Client.Update(ctx, cur)
		})
	}
	setAnnotation("2026-01-01")
	eventually(t, "rotation staged", func() error {
		if st := stateOf(t, tc); st.Next == "" || st.RotateRequest != "2026-01-01" {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	clock.Advance(time.Hour) // the suite's staging delay
	kick(t, tc)
	eventually(t, "published", func() error {
		st := stateOf(t, tc)
		if st.Revision != 2 || st.Previous != first || st.Next != "" {
			return fmt.Errorf("state rev %d previous=%v next=%q", st.Revision, st.Previous == first, st.Next)
		}
		return nil
	})
	// The same value again is not a new request.
	kick(t, tc)
	clock.Advance(time.Hour)
	kick(t, tc)
	time.Sleep(500 * time.Millisecond)
	if st := stateOf(t, tc); st.Next != "" || st.Revision != 2 {
		t.Fatalf("the same rotate value rotated again: %+v", st)
	}
}

func expectCredential(tc *turnpikev1.TurnCredential, status metav1.ConditionStatus, reason string, revision int64) error {
	c := meta.FindStatusCondition(tc.Status.Conditions, turnpikev1.ConditionReady)
	switch {
	case c == nil || c.Status != status || c.Reason != reason:
		return fmt.Errorf("Ready = %+v, want %s/%s", c, status, reason)
	case c.ObservedGeneration != tc.Generation || tc.Status.ObservedGeneration != tc.Generation:
		return fmt.Errorf("status describes generation %d, object is at %d", tc.Status.ObservedGeneration, tc.Generation)
	case tc.Status.CurrentRevision != revision:
		return fmt.Errorf("revision %d, want %d", tc.Status.CurrentRevision, revision)
	}
	return nil
}

func stateOf(t *testing.T, tc *turnpikev1.TurnCredential) render.CredentialState {
	t.Helper()
	s, err := getSecret(tc.Namespace, render.StateSecretName(tc))
	if err != nil {
		t.Fatal(err)
	}
	st, err := render.DecodeCredentialState(s.Data)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustBundle(t *testing.T, ts *turnpikev1.TurnServer) *config.Credentials {
	t.Helper()
	b, err := bundleOf(ts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTurnServerDeletionLeavesCredentialNotReady(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cred-orphan")
	ts := minimalTurnServer(ns, "relay", "cred-orphan-none", 3478)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "user", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type: turnpikev1.CredentialStatic, Username: "u"},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	publishFirstSecret(t, tc)
	eventually(t, "ready", func() error {
		return expectCredential(getCredential(t, tc), metav1.ConditionTrue, render.ReasonIssued, 1)
	})
	if err := env.Client.Delete(ctx, ts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not ready once the TurnServer is gone", func() error {
		return expectCredential(getCredential(t, tc), metav1.ConditionFalse, render.ReasonTurnServerNotFound, 1)
	})
	if _, err := getSecret(ns, "user"); err != nil {
		t.Fatalf("the apps' Secret went with the TurnServer: %v", err)
	}
}

// credentialGauge reads turnpike_operator_credentials{type,reason} from the
// operator's registry, as Prometheus would scrape it.
func credentialGauge(t *testing.T, typ, reason string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "turnpike_operator_credentials" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["type"] == typ && labels["reason"] == reason {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// rotateNow asks for a manual rotation of tc and publishes it: the new secret
// is staged, the suite's staging delay passes, apps get it, and the previous
// one stays valid on the relays for the overlap.
func rotateNow(t *testing.T, tc *turnpikev1.TurnCredential, request string) {
	t.Helper()
	eventually(t, "annotate", func() error {
		cur := getCredential(t, tc)
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[turnpikev1.AnnotationRotate] = request
		return env.Client.Update(context.Background(), cur)
	})
	eventually(t, "rotation staged", func() error {
		if st := stateOf(t, tc); st.Next == "" || st.RotateRequest != request {
			return fmt.Errorf("not staged: revision %d", st.Revision)
		}
		return nil
	})
	clock.Advance(time.Hour) // the suite's staging delay
	kick(t, tc)
	eventually(t, "rotation published", func() error {
		if st := stateOf(t, tc); st.Next != "" || st.Previous == "" {
			return fmt.Errorf("not published: revision %d", st.Revision)
		}
		return nil
	})
}

// TestReconcileDuringRotationOverlap reconciles a TurnServer while one of its
// credentials has a previous key that expires (NotAfter in the bundle). The
// reconcile must neither fail nor bump the bundle's generation, and a node's
// new address must still reach the relays.
func TestReconcileDuringRotationOverlap(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "overlap")
	node := newNode(t, "overlap-a", map[string]string{"suite": "overlap"}, externalIP("198.51.100.70"))
	ts := minimalTurnServer(ns, "relay", "overlap", 3478)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
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
	rotateNow(t, tc, "overlap-1")
	eventually(t, "previous key in the bundle with its end", func() error {
		for _, u := range mustBundle(t, ts).Users {
			if u.NotAfter != nil {
				return nil
			}
		}
		return fmt.Errorf("no key with notAfter")
	})

	generation := mustBundle(t, ts).Generation
	for range 3 {
		if _, err := reconciler.Reconcile(ctx, requestFor(ts)); err != nil {
			t.Fatalf("reconcile during the overlap: %v", err)
		}
	}
	if g := mustBundle(t, ts).Generation; g != generation {
		t.Fatalf("unchanged credentials went from generation %d to %d", generation, g)
	}

	createRelayPod(t, ts, "overlap-a", true)
	eventually(t, "the relay pod has its node's address", func() error {
		if got, err := nodeEntryOf(ts, "overlap-a"); err != nil || got != "&{[198.51.100.70] ExternalIP}" {
			return fmt.Errorf("node entry %s (%v)", got, err)
		}
		return nil
	})
	before, err := getRelayObjects(ts)
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{externalIP("198.51.100.71")}
	if err := env.Client.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new address reaches the relay during the overlap", func() error {
		if got, err := nodeEntryOf(ts, "overlap-a"); err != nil || got != "&{[198.51.100.71] ExternalIP}" {
			return fmt.Errorf("node entry %s (%v)", got, err)
		}
		return nil
	})
	// One node's change is a write to its pod, not to the relays' shared ConfigMap.
	if after, err := getRelayObjects(ts); err != nil || after.cm.ResourceVersion != before.cm.ResourceVersion {
		t.Fatalf("relay ConfigMap rewritten for one node's address (%v)", err)
	}
}

// TestUnchangedCredentialWritesNothing reconciles an issued TurnCredential
// again and counts the writes. Its rotation happened at a time with
// nanoseconds, as time.Now has; the API server stores seconds.
func TestUnchangedCredentialWritesNothing(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cred-idle")
	if err := env.Client.Create(ctx, minimalTurnServer(ns, "relay", "cred-idle-none", 3478)); err != nil {
		t.Fatal(err)
	}
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "sfu", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{
			TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type:          turnpikev1.CredentialStatic, Username: "sfu",
			Rotation: &turnpikev1.Rotation{Interval: metav1.Duration{Duration: 24 * time.Hour}, Overlap: metav1.Duration{Duration: 2 * time.Hour}},
		},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	clock.Advance(123456789 * time.Nanosecond)
	publishFirstSecret(t, tc)
	eventually(t, "issued", func() error {
		return expectCredential(getCredential(t, tc), metav1.ConditionTrue, render.ReasonIssued, 1)
	})
	if stateOf(t, tc).CurrentSince.Nanosecond() == 0 {
		t.Fatal("the test needs a rotation time with nanoseconds")
	}

	// Other tests' objects may still be settling, so wait for a quiet round;
	// on code that writes on every reconcile there never is one.
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(tc)}
	eventually(t, "three reconciles without a write", func() error {
		before := writes.n.Load()
		for range 3 {
			if _, err := credentialReconciler.Reconcile(ctx, req); err != nil {
				return err
			}
		}
		if n := writes.n.Load() - before; n != 0 {
			return fmt.Errorf("%d writes", n)
		}
		return nil
	})
}

// TestCredentialWriteFailureShownInStatus makes the API server refuse the
// credential's Secrets (a ResourceQuota allows none): the TurnCredential
// says so in its Ready condition, and once the quota is gone the retry
// stages the first secret.
func TestCredentialWriteFailureShownInStatus(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "cred-refused")
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "no-secrets", Namespace: ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceSecrets: resourceMust("0")}},
	}
	if err := env.Client.Create(ctx, quota); err != nil {
		t.Fatal(err)
	}
	// Play the quota controller, which envtest does not run.
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{corev1.ResourceSecrets: resourceMust("0")}}
	if err := env.Client.Status().Update(ctx, quota); err != nil {
		t.Fatal(err)
	}
	tc := &turnpikev1.TurnCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "sfu", Namespace: ns},
		Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"},
			Type: turnpikev1.CredentialStatic, Username: "sfu"},
	}
	if err := env.Client.Create(ctx, tc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "failure in the status", func() error {
		cur := getCredential(t, tc)
		if err := expectCredential(cur, metav1.ConditionFalse, render.ReasonSecretWriteFailed, 0); err != nil {
			return err
		}
		if msg := meta.FindStatusCondition(cur.Status.Conditions, turnpikev1.ConditionReady).Message; !strings.Contains(msg, "turnpike-state-sfu") || !strings.Contains(msg, "quota") {
			return fmt.Errorf("message does not say what failed: %q", msg)
		}
		return nil
	})

	if err := env.Client.Delete(ctx, quota); err != nil {
		t.Fatal(err)
	}
	eventually(t, "retried", func() error {
		return expectCredential(getCredential(t, tc), metav1.ConditionFalse, render.ReasonStaging, 0)
	})
}
