// Package integration runs the operator and a real relay together: the
// operator on a real API server, the relay fed from the objects the operator
// generates, the way a kubelet feeds a relay pod.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/controllers"
	"github.com/turnpike-dev/turnpike/relay"
	"github.com/turnpike-dev/turnpike/relay/restauth"
	"github.com/turnpike-dev/turnpike/test/kubelet"
	"github.com/turnpike-dev/turnpike/test/testenv"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

const ns = "default"

// TestRotationWithoutLockout rotates a static password and a shared secret
// while clients keep allocating through a real relay, and counts the
// authentication failures of clients whose credentials are inside their
// validity window: there must be none. One client keeps the password it got
// before the rotation; the others fetch fresh credentials for every
// allocation, the way apps do (the Secret, or the issuing endpoint).
func TestRotationWithoutLockout(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const staging = 2 * time.Second
	issuer := startOperator(t, ctx, env, staging)
	port := testutil.FreePort(t)
	createTurnServer(t, env, port)
	for _, tc := range []*turnpikev1.TurnCredential{
		{ObjectMeta: metav1.ObjectMeta{Name: "static", Namespace: ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"}, Type: turnpikev1.CredentialStatic, Username: "sfu"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "rest", Namespace: ns},
			Spec: turnpikev1.TurnCredentialSpec{TurnServerRef: turnpikev1.LocalObjectReference{Name: "relay"}, Type: turnpikev1.CredentialSharedSecret}},
	} {
		if err := env.Client.Create(ctx, tc); err != nil {
			t.Fatal(err)
		}
	}
	token := env.ServiceAccountToken(t, ns, "app")
	env.GrantUse(t, ns, "app", "rest")

	node := &relayNode{client: env.Client, root: t.TempDir()}
	testenv.Eventually(t, "relay files", func() error { return node.sync(ctx) })
	go node.loop(ctx)
	relayDone := startRelay(t, ctx, node)
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	staticSecret := func() (string, string, error) {
		s, err := secret(ctx, env, "static")
		return string(s.Data["username"]), string(s.Data["password"]), err
	}
	restFromSecret := func() (string, string, error) {
		s, err := secret(ctx, env, "rest")
		u, p := restauth.Mint(string(s.Data["sharedSecret"]), "app", time.Now(), time.Hour)
		return u, p, err
	}
	restFromIssuer := func() (string, string, error) { return issue(issuer, token) }
	// Apps see the credentials once the operator publishes them.
	testenv.Eventually(t, "credentials published", func() error {
		if _, err := secret(ctx, env, "rest"); err != nil {
			return err
		}
		_, err := secret(ctx, env, "static")
		return err
	})
	_, oldPassword, err := staticSecret()
	if err != nil {
		t.Fatal(err)
	}
	oldCredentials := func() (string, string, error) { return "sfu", oldPassword, nil }

	// Everyone allocates before, during and after the rotation.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	results := map[string]*tally{}
	for name, creds := range map[string]func() (string, string, error){
		"static from Secret": staticSecret, "static kept from before": oldCredentials,
		"REST minted from Secret": restFromSecret, "REST from issuer": restFromIssuer,
	} {
		tl := &tally{}
		results[name] = tl
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				user, pass, err := creds()
				if err == nil {
					err = allocate(server, user, pass)
				}
				tl.add(err)
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}

	time.Sleep(time.Second)
	for _, name := range []string{"static", "rest"} {
		rotate(t, ctx, env, name, "1")
	}
	testenv.Eventually(t, "new password published", func() error {
		_, p, err := staticSecret()
		if err == nil && p == oldPassword {
			err = fmt.Errorf("apps still get the old password")
		}
		return err
	})
	time.Sleep(2 * time.Second) // keep allocating after the publish
	close(stop)
	wg.Wait()

	for name, tl := range results {
		t.Logf("%s: %d allocations, %d failures", name, tl.ok+tl.failed, tl.failed)
		if tl.failed > 0 || tl.ok < 10 {
			t.Errorf("%s: %d of %d allocations failed inside their validity window (last error: %v)", name, tl.failed, tl.ok+tl.failed, tl.lastErr)
		}
	}
	cancel()
	<-relayDone
}

type tally struct {
	mu         sync.Mutex
	ok, failed int
	lastErr    error
}

func (t *tally) add(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.failed++
		t.lastErr = err
		return
	}
	t.ok++
}

// startOperator runs the controllers in a manager, with the issuing endpoint
// served by httptest, and returns the endpoint's base URL.
func startOperator(t *testing.T, ctx context.Context, env *testenv.Env, staging time.Duration) string {
	t.Helper()
	skip := true
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controllers.Setup(mgr, mgr.GetClient(), controllers.Options{RelayImage: "unused", StagingDelay: staging}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	srv := httptest.NewServer((&controllers.Issuer{Client: mgr.GetClient()}).Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// createTurnServer creates a ready node for this machine and a TurnServer on it.
func createTurnServer(t *testing.T, env *testenv.Env, port int) {
	t.Helper()
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "local", Labels: map[string]string{"relay": "yes"}}}
	if err := testenv.CreateReadyNode(ctx, env.Client, node, []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	ts := &turnpikev1.TurnServer{
		ObjectMeta: metav1.ObjectMeta{Name: "relay", Namespace: ns},
		Spec: turnpikev1.TurnServerSpec{
			Realm:     "example.org",
			Listeners: []turnpikev1.Listener{{Name: "udp", Protocol: turnpikev1.ProtocolUDP, Port: int32(port)}},
			// Above Linux's default ephemeral range (32768-60999), where
			// testutil.FreePort's listener ports come from, so the two never
			// overlap (the API server refuses a listener inside the range).
			RelayPortRange: turnpikev1.PortRange{Min: 61000, Max: 61999},
			MetricsPort:    int32(testutil.FreePort(t)), HealthPort: int32(testutil.FreePort(t)),
			Placement: turnpikev1.Placement{NodeSelector: map[string]string{"relay": "yes"}},
		},
	}
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
}

// relayNode plays the kubelet's part for the relay pod on node "local":
// it writes the pod's volumes under root and keeps them in sync.
type relayNode struct {
	client client.Client
	root   string
	pod    *corev1.Pod // set by the first successful sync
}

func (n *relayNode) sync(ctx context.Context) error {
	ds := &appsv1.DaemonSet{}
	if err := n.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "relay-relay"}, ds); err != nil {
		return err
	}
	pod := kubelet.DaemonPod(ds, "local")
	if err := kubelet.SyncVolumes(ctx, n.client, pod, n.root); err != nil {
		return err
	}
	if n.pod == nil {
		n.pod = pod
	}
	return nil
}

func (n *relayNode) loop(ctx context.Context) {
	for ctx.Err() == nil {
		_ = n.sync(ctx)
		time.Sleep(200 * time.Millisecond)
	}
}

// startRelay runs the relay as the relay pod on node "local" would, with
// the pod's --config and --credentials mapped to the node's files.
func startRelay(t *testing.T, ctx context.Context, node *relayNode) <-chan error {
	t.Helper()
	configPath, credentialsDir, err := kubelet.RelayFiles(node.pod, node.root)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Options{
			ConfigPath: configPath, CredentialsDir: credentialsDir,
			NodeName: "local", HostIP: "127.0.0.1", ReloadInterval: 200 * time.Millisecond,
			LogOutput: io.Discard, Started: func(*relay.Relay) { close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("relay stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not start")
	}
	return done
}

// allocate makes one allocation with pion's client and releases it.
func allocate(server, user, pass string) error {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, Realm: "example.org", RTO: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		return err
	}
	relayed, err := c.Allocate()
	if err != nil {
		return fmt.Errorf("allocate as %s: %w", user, err)
	}
	return relayed.Close()
}

func secret(ctx context.Context, env *testenv.Env, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	return s, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)
}

func rotate(t *testing.T, ctx context.Context, env *testenv.Env, name, value string) {
	t.Helper()
	testenv.Eventually(t, "annotate "+name, func() error {
		tc := &turnpikev1.TurnCredential{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, tc); err != nil {
			return err
		}
		tc.Annotations = map[string]string{turnpikev1.AnnotationRotate: value}
		return env.Client.Update(ctx, tc)
	})
}

// issue asks the issuing endpoint for REST credentials.
func issue(base, token string) (string, string, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/namespaces/"+ns+"/turncredentials/rest?username=app", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", "", fmt.Errorf("issuer: %d %s", resp.StatusCode, b)
	}
	var r struct{ Username, Password string }
	return r.Username, r.Password, json.NewDecoder(resp.Body).Decode(&r)
}
