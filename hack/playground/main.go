// Command playground is what `make run` starts when no cluster answers: a
// throwaway Kubernetes control plane on this machine with turnpike running
// on it, end to end, so you can watch a TurnServer become a working relay
// and probe it.
//
// It starts kube-apiserver and etcd (the ones the tests use, from bin/k8s),
// installs the CRDs, runs `turnpike operator` against them, registers this
// machine as a Node, applies config/samples, and then does the work a
// kubelet and the DaemonSet controller would do for the relay pod: it
// writes the relay's ConfigMap and Secrets into files laid out like the
// pod's volume mounts, keeps them in sync, runs the relay in-process, and
// reports the pod ready. Finally it prints the iceServers JSON and a
// `turnpike probe` command to try. Ctrl-C stops everything and removes its
// temp dir. It runs under a supervisor (supervise.go), so that nothing
// outlives it, however it ends.
//
// This is a development aid; none of it is on the operator's or the relay's
// production path.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/turnpike-dev/turnpike/probe"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

type options struct {
	turnpike string // the turnpike binary that runs the operator
	verbose  bool   // stream operator and relay logs to stderr
	timeout  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.turnpike, "turnpike", "bin/playground-image/rootfs/turnpike", "turnpike binary to run the operator with: hack/run.sh unpacks it from the image")
	flag.BoolVar(&o.verbose, "v", false, "stream the operator's and the relay's logs to stderr (default: files in the temp dir)")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for each step of the start-up")
	flag.Parse()

	dir := os.Getenv(stateDirEnv)
	if dir == "" {
		os.Exit(supervise())
	}
	// A closed terminal (SIGHUP) stops the playground as Ctrl-C does; a
	// closed output pipe only fails the writes instead of killing it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	signal.Ignore(syscall.SIGPIPE)
	err := run(ctx, o, dir)
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		say("stopped during start-up")
	case err != nil:
		fmt.Fprintln(os.Stderr, "playground:", err)
		os.Exit(1)
	}
}

// run starts everything, waits for Ctrl-C, and tears down in reverse order.
// Every step registers its own cleanup with defer, so a failure half-way
// stops what already runs.
func run(ctx context.Context, o options, dir string) error {
	turnpikeBin, err := filepath.Abs(o.turnpike)
	if err != nil {
		return err
	}
	if _, err := os.Stat(turnpikeBin); err != nil {
		return fmt.Errorf("no turnpike binary (make run unpacks one from the image): %w", err)
	}
	hostIP, err := probe.LocalPeerAddress(false)
	if err != nil {
		return fmt.Errorf("this machine needs a non-loopback IPv4 address for its Node: %w", err)
	}
	// The supervisor removes dir too, unless it was killed: then the
	// playground, ended by its parent-death signal, is the one left to.
	defer os.RemoveAll(dir)
	say("state and logs in %s (removed on exit)", dir)

	say("starting kube-apiserver and etcd")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		say("stopping kube-apiserver and etcd")
		if err := env.Stop(); err != nil {
			say("stopping the control plane: %v", err)
		}
	}()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return err
	}

	say("starting the operator: %s operator --kubeconfig %s", o.turnpike, kubeconfig)
	operator, err := startOperator(turnpikeBin, kubeconfig, logSink(o.verbose, dir, "operator.log"))
	if err != nil {
		return err
	}
	defer operator.stop()

	c := &cluster{client: env.Client, hostIP: hostIP, nodeName: nodeName()}
	if err := c.registerNode(ctx); err != nil {
		return err
	}
	say("registered this machine as Node %s (InternalIP %s, labelled turnpike.dev/relay=true)", c.nodeName, hostIP)
	if err := c.applySamples(ctx); err != nil {
		return err
	}

	k := &localNode{cluster: c, dir: dir, logs: logSink(o.verbose, dir, "relay.log")}
	relayDone, err := k.start(ctx, o.timeout)
	if err != nil {
		return err
	}
	printNextSteps(ctx, c, o, kubeconfig)

	select {
	case <-ctx.Done():
		say("stopping (the relay drains first)")
	case err := <-operator.exited:
		return fmt.Errorf("the operator exited: %v", err)
	case err := <-relayDone:
		return fmt.Errorf("the relay exited: %v", err)
	}
	<-relayDone
	return nil
}

// logSink is where a component's logs go: stderr, or a file in dir.
func logSink(verbose bool, dir, name string) io.Writer {
	if verbose {
		return os.Stderr
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return os.Stderr
	}
	return f // closed by the process exit; the temp dir goes with it
}

func say(format string, args ...any) {
	fmt.Printf("playground: "+format+"\n", args...)
}

// nodeName is this machine's host name if it is a valid Node name.
func nodeName() string {
	name, err := os.Hostname()
	if err != nil || !validDNSLabel(name) {
		return "playground"
	}
	return name
}

func validDNSLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(s)-1
		if !ok {
			return false
		}
	}
	return true
}

var errTimeout = errors.New("timed out")
