// Command scale is the operator's scale benchmark (make scale): it runs
// `turnpike operator` against a real control plane (kube-apiserver, etcd,
// kube-controller-manager from bin/k8s) with many nodes, and measures
// what the operator costs the API server and itself, phase by phase:
//
//  1. rollout: 100 TurnCredentials and one TurnServer placed on every
//     node; relay pods (created by the DaemonSet controller) are bound
//     and marked ready by a kubelet stand-in, 50 a second;
//  2. steady: nothing changes for -steady;
//  3. address changes: 100 nodes, one at a time, get a new ExternalIP;
//  4. rotations: 100 forced rotations (the turnpike.dev/rotate annotation);
//  5. node deletions: 100 nodes, one at a time;
//  6. api outage: kube-apiserver stops for -outage and starts again on
//     the same etcd.
//
// For each phase: the operator's writes and bytes written by resource and
// verb, empty writes, 409 conflicts and failed writes (from the API
// server's audit log); reconcile errors and panics (from the operator's
// metrics); its CPU time and peak RSS (from /proc); the largest object of
// each kind it writes (read back at the phase's end); and for the rollout,
// how long after the last relay pod became ready the TurnServer said
// Ready. Then the goals set for 10,000 nodes, met or not. A table goes to
// stdout, the same figures as JSON to -out. docs/performance.md says how
// to read them.
//
// Everything runs on loopback; no relay runs and nothing is sent to the
// nodes' (made-up) addresses. Every loop has a count and a deadline.
//
// Usage: scale [-nodes 1000] [-steady 5m] [-operator bin/turnpike] [-tree .] [-out bin/scale-TIME.json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/turnpike-dev/turnpike/test/benchlock"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

type options struct {
	nodes, credentials, changes int
	steady, outage              time.Duration
	readyRate                   float64
	pace, quiet, settle         time.Duration
	staging                     time.Duration
	operatorBin, tree, out      string
	keep                        bool
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 1000, "Ready nodes labelled for relays")
	flag.IntVar(&o.credentials, "credentials", 100, "TurnCredentials of the TurnServer")
	flag.IntVar(&o.changes, "changes", 100, "single changes in each of the address, rotation and node deletion phases")
	flag.DurationVar(&o.steady, "steady", 5*time.Minute, "length of the steady-state phase")
	flag.DurationVar(&o.outage, "outage", time.Minute, "how long kube-apiserver is down")
	flag.Float64Var(&o.readyRate, "ready-rate", 50, "relay pods the kubelet stand-in marks ready per second")
	flag.DurationVar(&o.pace, "pace", 500*time.Millisecond, "time between two single changes")
	flag.DurationVar(&o.quiet, "quiet", 10*time.Second, "a phase ends once the operator has written nothing for this long")
	flag.DurationVar(&o.settle, "settle", 3*time.Minute, "the most a phase waits for the operator to settle")
	flag.DurationVar(&o.staging, "staging", 10*time.Second, "the operator's --credential-staging-delay (90 s by default in a cluster)")
	flag.StringVar(&o.operatorBin, "operator", "", "turnpike binary to run as the operator; default: built from -tree")
	flag.StringVar(&o.tree, "tree", testenv.RepoRoot(), "source tree of the operator: its config/crd/bases and config/rbac are installed")
	flag.StringVar(&o.out, "out", "", "JSON report; default bin/scale-<time>.json")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (audit log, operator and controller-manager logs)")
	reprint := flag.String("report", "", "print the tables of an earlier run's JSON report, with the goals judged again, and run nothing")
	flag.Parse()
	if *reprint != "" {
		if err := printSaved(*reprint); err != nil {
			fmt.Fprintf(os.Stderr, "scale: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if o.nodes <= o.changes || o.credentials < 1 || o.changes < 1 || o.readyRate < 1 {
		fmt.Fprintln(os.Stderr, "scale: need -nodes > -changes ≥ 1, -credentials ≥ 1 and -ready-rate ≥ 1")
		os.Exit(2)
	}
	if o.out == "" {
		o.out = filepath.Join(testenv.RepoRoot(), "bin", "scale-"+time.Now().UTC().Format("20060102-150405")+".json")
	}
	release, err := benchlock.Hold(os.Stdout, "scale")
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(1)
	}
	defer release()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	// controller-runtime's client logs through this; the benchmark's own
	// output is the report.
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	dir, err := os.MkdirTemp("", "turnpike-scale-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintf(os.Stderr, "scale: work directory %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.operatorBin == "" {
		if o.operatorBin, err = buildOperator(ctx, o.tree, dir); err != nil {
			return err
		}
	}
	// The whole run is bounded: every phase's own deadline, plus slack.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute+o.steady+time.Duration(float64(o.nodes)/o.readyRate)*time.Second)
	defer cancel()

	started := time.Now()
	fmt.Fprintf(os.Stderr, "scale: starting kube-apiserver, etcd, kube-controller-manager\n")
	cl, err := startCluster(dir, o.tree)
	if err != nil {
		return err
	}
	defer cl.stop()
	kubeconfig, err := cl.operatorAccess(ctx, o.tree)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "scale: creating %d nodes\n", o.nodes)
	if err := cl.createNodes(ctx, o.nodes); err != nil {
		return err
	}
	k, err := startKubelets(ctx, cl.cs, o.readyRate)
	if err != nil {
		return err
	}
	op, err := startOperator(o, dir, kubeconfig)
	if err != nil {
		return err
	}
	go op.run(ctx)
	defer op.stop(10 * time.Second)

	b := &bench{o: o, cl: cl, op: op, kubelets: k, audit: newAuditLog(cl.auditLog, operatorUser), nodes: o.nodes}
	r := report{Started: started, Nodes: o.nodes, Credentials: o.credentials,
		Operator: fmt.Sprintf("%s (CRDs and RBAC from %s)", o.operatorBin, o.tree), Commit: treeCommit(o.tree),
		Options: fmt.Sprintf("steady %s, outage %s, %d changes %s apart, ready rate %.0f/s, quiet %s, settle ≤ %s, staging delay %s",
			o.steady, o.outage, o.changes, o.pace, o.readyRate, o.quiet, o.settle, o.staging)}
	var runErr error
	for _, p := range []func(context.Context) (phaseResult, error){
		b.rollout, b.steady, b.addressChanges, b.rotations, b.nodeDeletions, b.outage,
	} {
		res, err := p(ctx)
		if err != nil {
			runErr = err
			break
		}
		r.Phases = append(r.Phases, res)
	}
	r.PeakRSS = op.peak()
	r.Targets = evaluate(r.Phases, r.PeakRSS)
	printReport(os.Stdout, r)
	if err := writeJSON(o.out, r); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\n", o.out)
	if runErr != nil && o.keep {
		fmt.Fprintf(os.Stderr, "scale: logs in %s\n", dir)
	}
	return runErr
}

// startOperator runs `turnpike operator` with the flags a deployment of
// the chart gives it (leader election on, the issuing endpoint off), its
// metrics and health endpoints on loopback ports of its own.
func startOperator(o options, dir string, kubeconfig []byte) (*operator, error) {
	path := filepath.Join(dir, "operator-kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	metricsAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	healthAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "operator.log"))
	if err != nil {
		return nil, err
	}
	op := &operator{
		bin: o.operatorBin,
		args: []string{"operator", "--kubeconfig", path,
			"--leader-elect=true", "--leader-election-namespace", operatorNS,
			"--relay-image", "turnpike:scale", "--zap-log-level", "info", "--issuer-bind-address=",
			"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", healthAddr,
			"--credential-staging-delay", o.staging.String()},
		log:        log,
		metricsURL: "http://" + metricsAddr + "/metrics",
	}
	return op, op.start()
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// buildOperator builds turnpike from tree into dir.
func buildOperator(ctx context.Context, tree, dir string) (string, error) {
	bin := filepath.Join(dir, "turnpike")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = tree
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the operator in %s: %v\n%s", tree, err, out)
	}
	return bin, nil
}

// treeCommit is the tree's commit, "+dirty" when it has changes.
func treeCommit(tree string) string {
	out, err := exec.Command("git", "-C", tree, "describe", "--always", "--dirty=+dirty", "--abbrev=12").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// printSaved prints a saved report as the run that wrote it did, with the
// goals judged by this version.
func printSaved(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	r.Targets = evaluate(r.Phases, r.PeakRSS)
	printReport(os.Stdout, r)
	return nil
}

func writeJSON(path string, r report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
