// Command turnpike is the one binary of the project: the operator, the relay
// that runs on every relay node, and tools around them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is a subcommand: it gets its own arguments and a context that is
// cancelled on SIGINT or SIGTERM. What cancellation means is the command's
// choice: the relay drains its allocations before it returns.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{
	"operator": {"run the controller manager that reconciles TurnServers and TurnCredentials", runOperator},
	"relay":    {"run a TURN relay from a config file (what every relay pod runs)", runRelay},
	"fastpath": {"load the relay's eBPF fast path and serve the relay over a Unix socket (the relay pod's privileged container)", runFastPath},
	"probe":    {"allocate through a TURN server and ping an echo peer through it (turnpike probe URL ...)", runProbe},
	"version":  {"print the version", func(context.Context, []string) error { fmt.Println(version); return nil }},
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]].run == nil {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := commands[os.Args[1]].run(ctx, os.Args[2:])
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "turnpike %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: turnpike COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
}
