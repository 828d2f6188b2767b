package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/turnpike-dev/turnpike/relay"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// runRelay is `turnpike relay`: it parses flags and hands over to package
// relay, which serves until ctx is cancelled (SIGTERM) and then drains.
func runRelay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	opts := relay.Options{Version: version}
	fs.StringVar(&opts.ConfigPath, "config", "", "path of relay.yaml (required)")
	fs.StringVar(&opts.CredentialsDir, "credentials", "", "directory holding credentials.yaml (the mounted Secret)")
	fs.StringVar(&opts.LogLevel, "log-level", "", "debug, info, warn or error (overrides log.level)")
	fs.StringVar(&opts.LogFormat, "log-format", "", "json or text (overrides log.format)")
	fs.Func("fast-path", "Auto, Enabled or Disabled: overrides relay.yaml fastPath.mode", func(v string) error {
		switch m := config.FastPathMode(v); m {
		case config.FastPathAuto, config.FastPathEnabled, config.FastPathDisabled:
			opts.FastPathMode = m
			return nil
		}
		return fmt.Errorf("must be Auto, Enabled or Disabled")
	})
	fs.StringVar(&opts.FastPathSocket, "fast-path-socket", "", "the fast-path agent's Unix socket: overrides relay.yaml fastPath.socket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return relay.Run(ctx, opts)
}
