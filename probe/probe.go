// Package probe checks a TURN server end to end, as a WebRTC client would use
// it: it connects, allocates a relayed address with the given credentials,
// permits a UDP echo peer, and sends pings through the relay to the peer and
// back. It reports how long the allocation took, the round-trip times and
// the loss, or why it failed.
//
// The echo peer is, by default, a second allocation on the same server that
// sends every ping back: exactly the path of the commonest WebRTC call
// through TURN, both peers on one relay, and it works from any network.
// Options.Peer names a UDP echo service to use instead.
package probe

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// Options say what to probe and how.
type Options struct {
	Server   Server
	Username string
	Password string
	// Peer is host:port of a UDP echo service; empty: a second allocation
	// on the same server echoes.
	Peer string
	// Pings is how many pings to send; default 5.
	Pings int
	// Timeout bounds each step (connect, allocate, each ping); default 5s.
	Timeout time.Duration
	// Insecure skips TLS/DTLS certificate verification (turns: only).
	Insecure bool
}

// Result is what a successful probe measured.
type Result struct {
	Server         Server
	RelayedAddress net.Addr
	Peer           net.Addr
	AllocationTime time.Duration
	// RTTs of the pings that came back, in the order sent.
	RTTs []time.Duration
	Sent int
}

// Received is how many pings came back.
func (r *Result) Received() int { return len(r.RTTs) }

// Loss is the fraction of pings lost, 0 to 1.
func (r *Result) Loss() float64 {
	if r.Sent == 0 {
		return 0
	}
	return float64(r.Sent-r.Received()) / float64(r.Sent)
}

// MedianRTT is the median round-trip time of the pings that came back.
func (r *Result) MedianRTT() time.Duration {
	if len(r.RTTs) == 0 {
		return 0
	}
	sorted := slices.Clone(r.RTTs)
	slices.Sort(sorted)
	mid := len(sorted) / 2
	if len(sorted)%2 == 1 {
		return sorted[mid]
	}
	return (sorted[mid-1] + sorted[mid]) / 2
}

// Run probes the server. Failures are *Error with a Kind and a hint.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Pings <= 0 {
		o.Pings = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	res := &Result{Server: o.Server}
	a, err := allocateOn(ctx, o, res)
	if err != nil {
		return nil, err
	}
	defer a.close()
	res.RelayedAddress = a.relayConn.LocalAddr()

	peer, stopPeer, err := echoPeer(ctx, o, a)
	if err != nil {
		return nil, err
	}
	defer stopPeer()
	res.Peer = peer

	// An explicit permission, so a refused peer is reported as such and not
	// as lost pings (a relay drops data to peers without permission).
	if err := a.client.CreatePermission(peer); err != nil {
		return nil, classify("permission", o.Server, fmt.Errorf("peer %s: %w", peer, err))
	}
	if err := ping(ctx, a.relayConn, peer, o, res); err != nil {
		return nil, err
	}
	return res, nil
}

// allocation is a TURN client with one allocation on the server.
type allocation struct {
	client    *turn.Client
	relayConn net.PacketConn
	close     func()
}

// allocateOn connects to the server and allocates; res (when not nil)
// gets the time the allocation took.
func allocateOn(ctx context.Context, o Options, res *Result) (*allocation, error) {
	conn, err := dialServer(ctx, o)
	if err != nil {
		return nil, classify("connect", o.Server, err)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: o.Server.Address(),
		Username:       o.Username,
		Password:       o.Password,
		Conn:           conn,
		LoggerFactory:  quietLogger(),
	})
	if err != nil {
		conn.Close()
		return nil, classify("connect", o.Server, err)
	}
	if err := client.Listen(); err != nil {
		client.Close()
		conn.Close()
		return nil, classify("connect", o.Server, err)
	}
	allocCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	start := time.Now()
	relayConn, err := client.AllocateWithContext(allocCtx)
	cancel()
	if err != nil {
		client.Close()
		conn.Close()
		return nil, classify("allocate", o.Server, err)
	}
	if res != nil {
		res.AllocationTime = time.Since(start)
	}
	return &allocation{client: client, relayConn: relayConn, close: func() {
		_ = relayConn.Close() // deallocates (Refresh with lifetime 0)
		client.Close()
		conn.Close()
	}}, nil
}

// ping sends o.Pings numbered pings through the relay and waits for each
// echo up to the timeout (so a lost ping costs one timeout, not the run).
func ping(ctx context.Context, relayConn net.PacketConn, peer net.Addr, o Options, res *Result) error {
	buf := make([]byte, 1500)
	for seq := 0; seq < o.Pings && ctx.Err() == nil; seq++ {
		payload := []byte("turnpike-probe " + strconv.Itoa(seq))
		sent := time.Now()
		if _, err := relayConn.WriteTo(payload, peer); err != nil {
			return classify("ping", o.Server, err)
		}
		res.Sent++
		_ = relayConn.SetReadDeadline(sent.Add(o.Timeout))
		for {
			n, from, err := relayConn.ReadFrom(buf)
			if err != nil {
				break // timeout: this ping is lost
			}
			if from.String() == peer.String() && string(buf[:n]) == string(payload) {
				res.RTTs = append(res.RTTs, time.Since(sent))
				break
			}
			// A late echo of an earlier ping: keep waiting for this one.
		}
	}
	if err := ctx.Err(); err != nil {
		return &Error{Kind: KindOther, Step: "ping", Err: err}
	}
	if res.Received() == 0 {
		return &Error{Kind: KindNoEcho, Step: "ping", Err: fmt.Errorf("none of %d pings came back from peer %s", res.Sent, peer),
			Hint: "the allocation works but nothing reached the peer and back: a firewall between relay and peer, or a peer that does not echo"}
	}
	return nil
}

// dialServer opens the client's socket to the server, as a PacketConn the
// TURN client can use: a UDP socket, or a TCP/TLS/DTLS connection framed as
// packets.
func dialServer(ctx context.Context, o Options) (net.PacketConn, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	s := o.Server
	tlsConfig := &tls.Config{ServerName: s.Host, InsecureSkipVerify: o.Insecure} //nolint:gosec // only with --insecure
	switch {
	case !s.Secure && s.Transport == "udp":
		return listenUDPLike(s)
	case !s.Secure: // tcp
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", s.Address())
		if err != nil {
			return nil, err
		}
		return turn.NewSTUNConn(c), nil
	case s.Transport == "tcp": // TLS
		d := tls.Dialer{Config: tlsConfig}
		c, err := d.DialContext(ctx, "tcp", s.Address())
		if err != nil {
			return nil, err
		}
		return turn.NewSTUNConn(c), nil
	default: // DTLS
		raddr, err := net.ResolveUDPAddr("udp", s.Address())
		if err != nil {
			return nil, err
		}
		udp, err := listenUDPLike(s)
		if err != nil {
			return nil, err
		}
		c, err := dtls.Client(udp, raddr, &dtls.Config{ServerName: s.Host, InsecureSkipVerify: o.Insecure}) //nolint:gosec // only with --insecure
		if err == nil {
			err = c.HandshakeContext(ctx)
		}
		if err != nil {
			udp.Close()
			return nil, err
		}
		return &connectedPacketConn{Conn: c}, nil
	}
}

// listenUDPLike opens a UDP socket of the server's IP family: the TURN client
// asks for a relayed address of its socket's family, so they must match.
func listenUDPLike(s Server) (net.PacketConn, error) {
	raddr, err := net.ResolveUDPAddr("udp", s.Address())
	if err != nil {
		return nil, err
	}
	if raddr.IP.To4() != nil {
		return net.ListenPacket("udp4", "0.0.0.0:0")
	}
	return net.ListenPacket("udp6", "[::]:0")
}

// connectedPacketConn presents a connected datagram conn (DTLS) as a
// PacketConn: every packet comes from, and goes to, the one remote address.
type connectedPacketConn struct{ net.Conn }

func (c *connectedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := c.Read(p)
	return n, c.RemoteAddr(), err
}

func (c *connectedPacketConn) WriteTo(p []byte, _ net.Addr) (int, error) { return c.Write(p) }

// quietLogger drops pion's logs: the probe reports what matters itself.
func quietLogger() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	f.Writer = io.Discard
	return f
}
