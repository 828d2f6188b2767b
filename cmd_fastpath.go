package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/turnpike-dev/turnpike/relay"
)

// runFastPath is `turnpike fastpath`: the relay pod's second container, the
// only one with the capabilities to load the eBPF fast path. It serves the
// relay over a Unix socket and re-checks everything the relay asks.
func runFastPath(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fastpath", flag.ContinueOnError)
	var opts relay.AgentOptions
	fs.StringVar(&opts.ConfigPath, "config", "", "path of the relay's relay.yaml (required)")
	fs.StringVar(&opts.Socket, "socket", "", "Unix socket the relay connects to (required), e.g. /run/turnpike/fastpath.sock")
	fs.IntVar(&opts.RelayUID, "relay-uid", 65532, "the relay's user: connections from any other are refused (-1: any)")
	fs.StringVar(&opts.LogLevel, "log-level", "", "debug, info, warn or error")
	fs.StringVar(&opts.LogFormat, "log-format", "", "json or text (default: relay.yaml log.format)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return relay.RunFastPathAgent(ctx, opts)
}
