package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/controllers"
)

type operatorFlags struct {
	kubeconfig       string
	metricsAddr      string
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	relayImage       string
	stagingDelay     time.Duration
	issuerAddr       string
	kubeAPIQPS       float64
	kubeAPIBurst     int
	pprofAddr        string
}

// Defaults of the operator's client-side rate limit. client-go's own (5/s,
// burst 10) throttles a cluster of thousands of nodes to minutes behind;
// these leave room for a large cluster's start-up burst while staying well
// under an API server's default priority-and-fairness share.
const (
	defaultKubeAPIQPS   = 50
	defaultKubeAPIBurst = 100
)

func runOperator(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	var f operatorFlags
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file; default: in-cluster config, then $KUBECONFIG, then ~/.kube/config")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of the operator's Prometheus metrics; 0 disables")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&f.leaderElect, "leader-elect", true, "elect a leader, so that several replicas can run and only one acts")
	fs.StringVar(&f.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader election Lease; default: the operator's own namespace in a cluster, else \"default\"")
	fs.StringVar(&f.relayImage, "relay-image", envOr("RELAY_IMAGE", "turnpike:"+version), "relay image for TurnServers that do not name one ($RELAY_IMAGE); normally the operator's own image")
	fs.DurationVar(&f.stagingDelay, "credential-staging-delay", controllers.DefaultStagingDelay,
		"how long relays accept a rotated secret before apps are given it; must exceed the kubelet's Secret sync delay")
	fs.StringVar(&f.issuerAddr, "issuer-bind-address", ":8082",
		"address of the credential issuing endpoint ("+controllers.IssuerPath+"); keep it in-cluster; empty disables")
	fs.Float64Var(&f.kubeAPIQPS, "kube-api-qps", defaultKubeAPIQPS, "requests per second the operator may send to the API server (client-side limit)")
	fs.IntVar(&f.kubeAPIBurst, "kube-api-burst", defaultKubeAPIBurst, "requests the operator may send to the API server in a burst above --kube-api-qps")
	fs.StringVar(&f.pprofAddr, "pprof-bind-address", "",
		"loopback address (127.0.0.1:PORT) of Go's /debug/pprof profiles, for measuring the operator; empty disables")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(logger)
	// client-go reports failed watches and lists (an API server outage)
	// through klog: send them to the same log, in the same format.
	klog.SetLogger(logger)

	if err := checkPprofAddr(f.pprofAddr); err != nil {
		return err
	}
	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	if err := setRateLimit(cfg, f.kubeAPIQPS, f.kubeAPIBurst); err != nil {
		return err
	}
	mgr, err := newOperatorManager(cfg, f)
	if err != nil {
		return err
	}
	ctrl.Log.Info("starting operator", "version", version, "relayImage", f.relayImage, "kubeAPIQPS", cfg.QPS, "kubeAPIBurst", cfg.Burst,
		"goMemoryLimit", setSoftMemoryLimit(os.ReadFile))
	return mgr.Start(ctx)
}

// newOperatorManager builds the controller manager with every reconciler.
func newOperatorManager(cfg *rest.Config, f operatorFlags) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := turnpikev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	leaderNS := f.leaderElectionNS
	if leaderNS == "" && !inCluster() {
		leaderNS = "default"
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		PprofBindAddress:        f.pprofAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        "operator.turnpike.dev",
		LeaderElectionNamespace: leaderNS,
		// Leaving on shutdown lets a standby take over at once.
		LeaderElectionReleaseOnCancel: true,
		// Only relay pods, and of nodes and pods only what is read.
		Cache: cache.Options{ByObject: controllers.CacheByObject()},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	opts := controllers.Options{RelayImage: f.relayImage, StagingDelay: f.stagingDelay, IssuerAddr: f.issuerAddr}
	if _, err := controllers.Setup(mgr, mgr.GetClient(), opts); err != nil {
		return nil, fmt.Errorf("setting up controllers: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}

// checkPprofAddr accepts only a loopback address: profiles show memory
// contents (Secrets included) and cost CPU, so they are never served to the
// network.
func checkPprofAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-bind-address: %w", err)
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("--pprof-bind-address must be a loopback address such as 127.0.0.1:6060, got %q", addr)
	}
	return nil
}

// Where a container's memory limit is: cgroup v2, then v1.
var cgroupMemoryLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// setSoftMemoryLimit gives the Go runtime a soft memory limit of 90 % of
// the container's memory limit, unless $GOMEMLIMIT already set one, and
// returns the limit in force (math.MaxInt64: none). Without it the heap
// may grow to twice its live size between collections and past the
// container's limit, though the live heap alone fits: the collector then
// works harder near the limit instead of the kernel killing the process.
func setSoftMemoryLimit(readFile func(string) ([]byte, error)) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	for _, path := range cgroupMemoryLimitFiles {
		data, err := readFile(path)
		if err != nil {
			continue
		}
		// "max" (v2) or a number near MaxInt64 (v1) is no limit.
		limit, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err == nil && limit > 0 && limit < 1<<60 {
			debug.SetMemoryLimit(limit / 10 * 9)
		}
		break
	}
	return debug.SetMemoryLimit(-1)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return ctrl.GetConfig()
}

// setRateLimit sets the client's rate limit explicitly: left alone it is
// client-go's 5 requests/s with a kubeconfig, and whatever the in-cluster
// defaults are inside a cluster.
func setRateLimit(cfg *rest.Config, qps float64, burst int) error {
	if qps <= 0 || burst < 1 {
		return fmt.Errorf("--kube-api-qps must be positive and --kube-api-burst at least 1, got %v and %d", qps, burst)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
	return nil
}

func inCluster() bool {
	_, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token")
	return err == nil
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
