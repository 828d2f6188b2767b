package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/turnpike-dev/turnpike/probe"
	"github.com/turnpike-dev/turnpike/relay/restauth"
)

const probeUsage = `usage: turnpike probe URL [--username U --password P | --secret S] [flags]
       turnpike probe --nat stun:HOST[:PORT] [--timeout D]

Allocates a relayed address on a TURN server, pings an echo peer through it,
and reports the allocation time, median round-trip time, loss and relayed
address. Exits non-zero with the reason when any step fails (unreachable,
authentication failed (401), peer refused (403), quota reached (486), no echo).

URL is turn:HOST[:PORT][?transport=udp|tcp] (default 3478, udp) or
turns:HOST[:PORT][?transport=tcp|udp] (TLS, or DTLS for udp; default 5349).

--nat runs NAT behaviour discovery (RFC 5780) instead, against a STUN server
with an alternate address (a turnpike relay with spec.behaviorDiscovery, or
coturn with two listening addresses), and says in plain words what this
machine's NAT does to UDP and what that means for WebRTC calls.

Credentials: --username and --password (or $TURNPIKE_PASSWORD), or --secret
(or $TURNPIKE_SECRET), a TURN REST shared secret from which the probe mints
username "<expiry>:probe" and password base64(HMAC-SHA1(secret, username)).

The echo peer: without --peer the probe makes a second allocation on the
same server, which sends every ping back: the path of the commonest WebRTC
call through TURN, both peers on one relay, which turnpike's default peer
policy admits. It needs no route from the relay to this machine. --peer
HOST:PORT pings a UDP echo service instead (it must be a peer the server's
policy allows).

flags:
`

// runProbe is `turnpike probe`.
func runProbe(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "--nat" || args[0] == "-nat") {
		return runNATProbe(ctx, args[1:])
	}
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var o probe.Options
	var secret string
	fs.StringVar(&o.Username, "username", "", "TURN username")
	fs.StringVar(&o.Password, "password", os.Getenv("TURNPIKE_PASSWORD"), "TURN password ($TURNPIKE_PASSWORD)")
	fs.StringVar(&secret, "secret", os.Getenv("TURNPIKE_SECRET"), "TURN REST API shared secret to mint a credential from ($TURNPIKE_SECRET)")
	fs.StringVar(&o.Peer, "peer", "", "HOST:PORT of a UDP echo peer; default: a second allocation on the same server")
	fs.IntVar(&o.Pings, "count", 5, "pings to send")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "time limit of each step: connect, allocate, each ping")
	fs.BoolVar(&o.Insecure, "insecure", false, "turns: do not verify the server's certificate")
	fs.StringVar(&o.CA, "ca", "", "turns: PEM `file` of the CA to trust (or the server's certificate itself) instead of the system's")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), probeUsage)
		fs.PrintDefaults()
	}
	// The URL comes first, flags after it, as in the usage line.
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		if err := fs.Parse(args); err != nil {
			return err
		}
		fs.Usage()
		return errors.New("a TURN URL is required")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: flags go after the URL", fs.Args())
	}
	server, err := probe.ParseURL(args[0])
	if err != nil {
		return err
	}
	o.Server = server
	switch {
	case secret != "" && o.Username != "":
		return errors.New("give --username/--password or --secret, not both")
	case secret != "":
		o.Username, o.Password = restauth.Mint(secret, "probe", time.Now(), time.Hour)
	case o.Username == "" || o.Password == "":
		return errors.New("credentials required: --username and --password, or --secret")
	}

	fmt.Printf("probing %s as %s\n", server, o.Username)
	res, err := probe.Run(ctx, o)
	if err != nil {
		var pe *probe.Error
		if errors.As(err, &pe) && pe.Code != 0 {
			return fmt.Errorf("FAILED (%s, TURN error %d) at %w", pe.Kind, pe.Code, err)
		}
		if errors.As(err, &pe) {
			return fmt.Errorf("FAILED (%s) at %w", pe.Kind, err)
		}
		return fmt.Errorf("FAILED: %w", err)
	}
	printResult(res)
	return nil
}

func printResult(r *probe.Result) {
	fmt.Printf("relayed address  %s\n", r.RelayedAddress)
	fmt.Printf("peer             %s\n", r.Peer)
	fmt.Printf("allocation time  %s\n", r.AllocationTime.Round(time.Microsecond))
	fmt.Printf("rtt median       %s (%d pings)\n", r.MedianRTT().Round(time.Microsecond), r.Received())
	fmt.Printf("loss             %.0f%% (%d/%d lost)\n", 100*r.Loss(), r.Sent-r.Received(), r.Sent)
	fmt.Println("OK")
}

// runNATProbe is `turnpike probe --nat stun:HOST[:PORT]`.
func runNATProbe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("probe --nat", flag.ContinueOnError)
	var o probe.NATOptions
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Second, "how long each test waits for an answer; a filtering test that gets none takes this long")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), probeUsage)
		fs.PrintDefaults()
	}
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		fs.Usage()
		return errors.New("--nat needs a STUN URL: stun:HOST[:PORT]")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: flags go after the URL", fs.Args())
	}
	server, err := probe.ParseSTUNURL(args[0])
	if err != nil {
		return err
	}
	o.Server = server
	fmt.Printf("NAT behaviour discovery (RFC 5780) against %s\n", server)
	res, err := probe.DiscoverNAT(ctx, o)
	if err != nil {
		return fmt.Errorf("FAILED: %w", err)
	}
	printNATResult(res)
	return nil
}

func printNATResult(r *probe.NATResult) {
	fmt.Printf("server           %s (alternate %s)\n", r.Server, r.Other)
	fmt.Printf("local address    %s\n", r.Local)
	fmt.Printf("public address   %s\n", r.Mapped)
	if r.NoNAT {
		fmt.Println("mapping          none: this machine's address is public")
	} else {
		fmt.Printf("mapping          %s mapping: %s\n", r.Mapping, r.Mapping.MappingMeaning())
	}
	fmt.Printf("filtering        %s filtering: %s\n", r.Filtering, r.Filtering.FilteringMeaning())
	fmt.Printf("verdict          %s\n", r.Verdict())
}
