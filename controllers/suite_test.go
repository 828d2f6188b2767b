package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	relayconfig "github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/test/testenv"
	"go.uber.org/zap/zapcore"
)

// The envtest suite: a real kube-apiserver and etcd, and the reconciler
// running in a manager exactly as in the operator. There is no kubelet and
// no DaemonSet controller, so tests play their part by writing DaemonSet
// status and relay pods themselves.
var (
	env                  *testenv.Env
	reconciler           *TurnServerReconciler
	credentialReconciler *TurnCredentialReconciler
	writes               *writeCounter
	// clock is the operator's clock in this suite; rotation tests move it.
	clock = &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
)

// fakeClock is a settable clock shared by the reconcilers and the tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapLevel())))
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := startManager(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cancel()
	_ = env.Stop()
	os.Exit(code)
}

func startManager(ctx context.Context) error {
	skip := true
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: &skip},
		Cache:                  cache.Options{ByObject: CacheByObject()}, // as in the operator
	})
	if err != nil {
		return err
	}
	writes = &writeCounter{Client: mgr.GetClient()}
	rs, err := Setup(mgr, writes, Options{
		RelayImage: "registry.example/turnpike:test", StagingDelay: time.Hour, Now: clock.Now,
		RelayStatus: loopbackRelayStatus, RelayStatusInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	reconciler, credentialReconciler = rs.TurnServer, rs.TurnCredential
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
			os.Exit(1)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("cache did not sync")
	}
	return nil
}

// zapLevel logs only errors unless TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// writeCounter counts every write the reconcilers send to the API server,
// in all and per namespace with the bytes sent.
type writeCounter struct {
	client.Client
	n atomic.Int64

	mu          sync.Mutex
	byNamespace map[string]writeTotals
	// credentialReads counts Gets of TurnCredentials per namespace: each
	// TurnCredential pass starts with one, and nothing else the operator
	// runs in this suite gets one, so it counts the passes.
	credentialReads map[string]int
}

func (w *writeCounter) Get(ctx context.Context, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
	if _, ok := o.(*turnpikev1.TurnCredential); ok {
		w.mu.Lock()
		if w.credentialReads == nil {
			w.credentialReads = map[string]int{}
		}
		w.credentialReads[key.Namespace]++
		w.mu.Unlock()
	}
	return w.Client.Get(ctx, key, o, opts...)
}

// credentialPasses is how many TurnCredential passes have run in ns so far.
func (w *writeCounter) credentialPasses(ns string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.credentialReads[ns]
}

// writeTotals is how many writes went to one namespace and their bytes.
type writeTotals struct{ writes, bytes int64 }

// count records one write of obj, whose body is body (nil: obj as JSON).
func (w *writeCounter) count(obj any, body []byte) {
	w.n.Add(1)
	if body == nil {
		body, _ = json.Marshal(obj)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byNamespace == nil {
		w.byNamespace = map[string]writeTotals{}
	}
	t := w.byNamespace[namespaceOf(obj)]
	t.writes++
	t.bytes += int64(len(body))
	w.byNamespace[namespaceOf(obj)] = t
}

// in is what has been written to namespace ns so far.
func (w *writeCounter) in(ns string) writeTotals {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byNamespace[ns]
}

// namespaceOf reads the namespace of an object or an apply configuration.
func namespaceOf(obj any) string {
	switch o := obj.(type) {
	case interface{ GetNamespace() string }:
		return o.GetNamespace()
	case interface{ GetNamespace() *string }:
		if ns := o.GetNamespace(); ns != nil {
			return *ns
		}
	}
	return ""
}

// patchBody is what a patch sends.
func patchBody(p client.Patch, o client.Object) []byte {
	b, err := p.Data(o)
	if err != nil {
		return nil
	}
	return b
}

func (w *writeCounter) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	w.count(o, nil)
	return w.Client.Create(ctx, o, opts...)
}

func (w *writeCounter) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	w.count(o, nil)
	return w.Client.Update(ctx, o, opts...)
}

func (w *writeCounter) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.PatchOption) error {
	w.count(o, patchBody(p, o))
	return w.Client.Patch(ctx, o, p, opts...)
}

func (w *writeCounter) Apply(ctx context.Context, o runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	w.count(o, nil)
	return w.Client.Apply(ctx, o, opts...)
}

func (w *writeCounter) Delete(ctx context.Context, o client.Object, opts ...client.DeleteOption) error {
	w.count(o, []byte{})
	return w.Client.Delete(ctx, o, opts...)
}

func (w *writeCounter) Status() client.SubResourceWriter {
	return &countingStatusWriter{w.Client.Status(), w}
}

type countingStatusWriter struct {
	client.SubResourceWriter
	w *writeCounter
}

func (s *countingStatusWriter) Update(ctx context.Context, o client.Object, opts ...client.SubResourceUpdateOption) error {
	s.w.count(o, nil)
	return s.SubResourceWriter.Update(ctx, o, opts...)
}

func (s *countingStatusWriter) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	s.w.count(o, patchBody(p, o))
	return s.SubResourceWriter.Patch(ctx, o, p, opts...)
}

func (s *countingStatusWriter) Apply(ctx context.Context, o runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
	s.w.count(o, nil)
	return s.SubResourceWriter.Apply(ctx, o, opts...)
}

// eventually waits for the controllers to bring check to nil.
func eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	testenv.Eventually(t, what, check)
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// newNode creates a ready node with labels and addresses. The API server
// taints every new node not-ready; the test plays the kubelet and the node
// lifecycle controller, which report it ready and lift that taint.
func newNode(t *testing.T, name string, labels map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := env.Client.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = addrs
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if err := env.Client.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = nil
	if err := env.Client.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	return n
}

// externalIP and internalIP are shorthands for the envtest tests.
var externalIP, internalIP = rendertest.ExternalIP, rendertest.InternalIP

// loopbackRelayStatus asks only relays on loopback: the suite's nodes have
// made-up addresses, and tests send no traffic anywhere but this machine.
func loopbackRelayStatus(ctx context.Context, host netip.Addr, port int32) (*relayconfig.Status, error) {
	if !host.IsLoopback() {
		return nil, fmt.Errorf("test: not contacting %s", host)
	}
	return HTTPRelayStatus(ctx, host, port)
}
