package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/restauth"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

func mustParse(t *testing.T, raw string) Server {
	t.Helper()
	s, err := ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkSuccess asserts a probe worked end to end: every ping came back
// through a relayed address of the server.
func checkSuccess(t *testing.T, res *Result, kind string) {
	t.Helper()
	if kind != "" {
		t.Fatalf("probe failed: %s", kind)
	}
	if res.Received() != res.Sent || res.Sent == 0 {
		t.Errorf("%d of %d pings came back", res.Received(), res.Sent)
	}
	relayed, ok := res.RelayedAddress.(*net.UDPAddr)
	if !ok || relayed.IP.String() != serverAddress(t) || relayed.Port == 0 {
		t.Errorf("relayed address %v: want the server's address %s", res.RelayedAddress, serverAddress(t))
	}
	if peer, ok := res.Peer.(*net.UDPAddr); !ok || peer.IP.String() != serverAddress(t) || peer.Port == relayed.Port {
		t.Errorf("echo peer %v: want the second allocation, on the server's address %s", res.Peer, serverAddress(t))
	}
	if res.MedianRTT() <= 0 || res.AllocationTime <= 0 {
		t.Errorf("rtt %v, allocation time %v", res.MedianRTT(), res.AllocationTime)
	}
}

func TestProbeTurnpikeRelay(t *testing.T) {
	ports := startRelay(t, config.Quotas{})
	plain := net.JoinHostPort(serverAddress(t), strconv.Itoa(ports.plain))
	secure := net.JoinHostPort(serverAddress(t), strconv.Itoa(ports.tls))
	restUser, restPass := restauth.Mint(testSecret, "probe", time.Now(), time.Hour)

	ok := []struct {
		name, url, user, pass string
	}{
		{"udp", "turn:" + plain + "?transport=udp", testUser, testPassword},
		{"tcp", "turn:" + plain + "?transport=tcp", testUser, testPassword},
		{"tls", "turns:" + secure + "?transport=tcp", testUser, testPassword},
		{"dtls", "turns:" + secure + "?transport=udp", testUser, testPassword},
		{"shared secret", "turn:" + plain, restUser, restPass},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			res, kind := probeKind(t, Options{Server: mustParse(t, c.url), Username: c.user, Password: c.pass, Insecure: true})
			checkSuccess(t, res, kind)
		})
	}

	fail := []struct {
		name string
		o    Options
		want string
	}{
		{"wrong password", Options{Username: testUser, Password: "wrong"}, KindAuth},
		{"unknown user", Options{Username: "mallory", Password: testPassword}, KindAuth},
		{"expired REST credential", Options{Username: fmt.Sprintf("%d:probe", time.Now().Add(-time.Minute).Unix()), Password: "x"}, KindAuth},
		// Loopback is refused by every relay, whatever its allow list.
		{"loopback peer", Options{Username: testUser, Password: testPassword, Peer: "127.0.0.1:9"}, KindPeerDenied},
	}
	for _, c := range fail {
		t.Run(c.name, func(t *testing.T) {
			c.o.Server = mustParse(t, "turn:"+plain)
			if _, kind := probeKind(t, c.o); kind != c.want {
				t.Errorf("kind = %q, want %q", kind, c.want)
			}
		})
	}

	for _, transport := range []string{"tcp", "udp"} {
		url := "turns:" + secure + "?transport=" + transport
		t.Run("untrusted certificate over "+transport, func(t *testing.T) {
			o := Options{Server: mustParse(t, url), Username: testUser, Password: testPassword, Timeout: 5 * time.Second}
			_, err := Run(context.Background(), o)
			var perr *Error
			if !errors.As(err, &perr) || perr.Kind != KindTLS {
				t.Fatalf("error %v: want kind %q", err, KindTLS)
			}
			if !strings.Contains(perr.Hint, "--ca") || !strings.Contains(perr.Hint, "--insecure") {
				t.Errorf("hint %q names neither --ca nor --insecure", perr.Hint)
			}
		})
		t.Run("--ca with the server's certificate over "+transport, func(t *testing.T) {
			o := Options{Server: mustParse(t, url), Username: testUser, Password: testPassword, CA: ports.cert}
			if _, kind := probeKind(t, o); kind != "" {
				t.Errorf("kind = %q, want success", kind)
			}
		})
	}

	t.Run("quota", func(t *testing.T) {
		// A relay of its own: one allocation per user. Hold alice's, then
		// probe as alice. (On the shared relay, a quota would make the other
		// cases depend on how fast the relay frees a closed allocation.)
		quotaAddr := net.JoinHostPort(serverAddress(t), strconv.Itoa(startRelay(t, config.Quotas{AllocationsPerUser: 1}).plain))
		holder := allocate(t, quotaAddr)
		defer holder.Close()
		o := Options{Server: mustParse(t, "turn:"+quotaAddr), Username: testUser, Password: testPassword}
		if _, kind := probeKind(t, o); kind != KindQuota {
			t.Errorf("kind = %q, want %q", kind, KindQuota)
		}
	})

	t.Run("nothing listening", func(t *testing.T) {
		o := Options{Server: mustParse(t, "turn:127.0.0.1:"+strconv.Itoa(testutil.FreePort(t))+"?transport=tcp"), Username: testUser, Password: testPassword}
		if _, kind := probeKind(t, o); kind != KindUnreachable {
			t.Errorf("kind = %q, want %q", kind, KindUnreachable)
		}
	})
}

// allocate opens an allocation as alice and keeps it until Close.
func allocate(t *testing.T, server string) net.PacketConn {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: server, Username: testUser, Password: testPassword, Conn: conn, LoggerFactory: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relayConn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return relayConn
}

func TestProbeCoturn(t *testing.T) {
	port := startCoturn(t)
	addr := net.JoinHostPort(serverAddress(t), strconv.Itoa(port))
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			o := Options{Server: mustParse(t, "turn:"+addr+"?transport="+transport), Username: testUser, Password: testPassword}
			res, kind := probeKind(t, o)
			checkSuccess(t, res, kind)
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		o := Options{Server: mustParse(t, "turn:"+addr), Username: testUser, Password: "wrong"}
		if _, kind := probeKind(t, o); kind != KindAuth {
			t.Errorf("kind = %q, want %q", kind, KindAuth)
		}
	})
}
