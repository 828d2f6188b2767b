package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
)

// turnpike probe refuses bad invocations with a reason, and a failing probe
// is an error (so main exits 1) that names the kind of failure.
func TestProbeCommandErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	cases := []struct {
		args []string
		want string
	}{
		{nil, "a TURN URL is required"},
		{[]string{"--username", "u"}, "a TURN URL is required"},
		{[]string{"stun:127.0.0.1"}, "scheme must be turn: or turns:"},
		{[]string{"turn:127.0.0.1"}, "credentials required"},
		{[]string{"turn:127.0.0.1", "--username", "u", "--password", "p", "--secret", "s"}, "not both"},
		{[]string{"turn:127.0.0.1", "extra"}, "unexpected arguments"},
		{[]string{"turn:127.0.0.1:" + closedPort + "?transport=tcp", "--username", "u", "--password", "p", "--timeout", "2s"}, "FAILED (unreachable)"},
		{[]string{"--nat"}, "--nat needs a STUN URL"},
		{[]string{"--nat", "turn:127.0.0.1"}, "is not a STUN URL"},
		{[]string{"--nat", "stun:127.0.0.1", "extra"}, "unexpected arguments"},
		{[]string{"--nat", "stun:127.0.0.1:" + closedPort, "--timeout", "300ms"}, "FAILED: test I"},
	}
	for _, c := range cases {
		t.Setenv("TURNPIKE_PASSWORD", "")
		t.Setenv("TURNPIKE_SECRET", "")
		err := runProbe(context.Background(), c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("turnpike probe %q: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}
