//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/test/netlab"
)

// allocate makes a UDP allocation from inside ns on the relay at server
// (host:port) and returns the relayed conn; both end with the test.
func allocate(t *testing.T, ns *netlab.Namespace, server, user, pass string) (net.PacketConn, error) {
	t.Helper()
	c, closeClient, err := turnClient(ns, server, user, pass)
	if err != nil {
		return nil, err
	}
	t.Cleanup(closeClient)
	relayConn, err := c.Allocate()
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = relayConn.Close() })
	return relayConn, nil
}

// tryAllocate allocates once and releases everything at once: does the
// relay accept these credentials?
func tryAllocate(ns *netlab.Namespace, server, user, pass string) error {
	c, closeClient, err := turnClient(ns, server, user, pass)
	if err != nil {
		return err
	}
	defer closeClient()
	relayConn, err := c.Allocate()
	if err != nil {
		return err
	}
	return relayConn.Close()
}

// turnClient is a pion TURN client whose socket lives in ns; closeClient
// ends both (pion's Close leaves the socket open).
func turnClient(ns *netlab.Namespace, server, user, pass string) (c *turn.Client, closeClient func(), err error) {
	var conn net.PacketConn
	err = ns.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	loggers := logging.NewDefaultLoggerFactory()
	loggers.DefaultLogLevel = logging.LogLevelError
	c, err = turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, Realm: realm, LoggerFactory: loggers,
	})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	closeClient = func() { c.Close(); _ = conn.Close() }
	if err := c.Listen(); err != nil {
		closeClient()
		return nil, nil, err
	}
	return c, closeClient, nil
}

// createPermission asks the relay for a permission to peer and returns the
// STUN error code (0 on success).
func createPermission(t *testing.T, relayConn net.PacketConn, peer string) int {
	t.Helper()
	p, ok := relayConn.(interface{ CreatePermissions(...net.Addr) error })
	if !ok {
		t.Fatalf("%T cannot create permissions", relayConn)
	}
	err := p.CreatePermissions(&net.UDPAddr{IP: net.ParseIP(peer), Port: 9})
	var turnErr *stun.TurnError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &turnErr):
		return int(turnErr.ErrorCodeAttr.Code)
	default:
		t.Fatalf("CreatePermission %s: %v", peer, err)
		return 0
	}
}

// relayMetric reads one sample of the relay on node from its /metrics,
// from inside the node's namespace; 0 when the series is absent.
func relayMetric(t *testing.T, node labNode, series string) float64 {
	t.Helper()
	res, err := node.ns.HTTPClient().Get(fmt.Sprintf("http://%s:%d/metrics", node.hostIP, metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	return metricValue(t, res.Body, series)
}

func metricValue(t *testing.T, r io.Reader, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return v
		}
	}
	return 0
}

// turnAddr is host:port of a relay's TURN listener.
func turnAddr(publicIP string) string { return net.JoinHostPort(publicIP, strconv.Itoa(turnPort)) }
