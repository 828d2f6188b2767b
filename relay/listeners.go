package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// openListeners binds every listener of relay.yaml on every bind address
// (or once on all addresses). On error it closes what it opened.
func (r *Relay) openListeners() (pcs []turn.PacketConnConfig, ls []turn.ListenerConfig, err error) {
	defer func() {
		if err != nil {
			closeListeners(pcs, ls)
		}
	}()
	r.edge = r.newEdge()
	hosts := []string{""}
	if b := r.current().addrs.bind; len(b) > 0 {
		hosts = hosts[:0]
		for _, a := range b {
			hosts = append(hosts, a.String())
		}
	}
	discoveryListener, _ := r.cfg.BehaviorDiscoveryListener()
	primaries := map[netip.AddrPort]*net.UDPConn{} // behaviour discovery's, by bind address
	for _, l := range r.cfg.Listeners {
		perm := r.permissionHandler(l.Protocol.Transport(), uint16(l.Port))
		for _, host := range hosts {
			addr := net.JoinHostPort(host, strconv.Itoa(l.Port))
			switch l.Protocol {
			case config.UDP:
				conns, gens, err := r.listenUDP(addr)
				if err != nil {
					return pcs, ls, fmt.Errorf("listener %s: %w", l.Name, err)
				}
				for i, c := range conns {
					pcs = append(pcs, turn.PacketConnConfig{PacketConn: c, RelayAddressGenerator: gens[i], PermissionHandler: perm})
				}
				if ap, err := netip.ParseAddrPort(addr); err == nil && l.Name == discoveryListener.Name {
					primaries[ap] = conns[0].(*clientPacketConn).PacketConn.(*net.UDPConn)
				}
			default:
				gen := newAddressGenerator(r)
				ln, err := r.listenStream(l, addr, r.edgeFor(gen))
				if err != nil {
					return pcs, ls, fmt.Errorf("listener %s: %w", l.Name, err)
				}
				ls = append(ls, turn.ListenerConfig{Listener: ln, RelayAddressGenerator: gen, PermissionHandler: perm})
			}
			r.log.Info("listening", "listener", l.Name, "protocol", string(l.Protocol), "address", addr)
		}
	}
	alternates, err := r.openDiscovery(primaries)
	if err != nil {
		return pcs, ls, err
	}
	// pion owns the alternates' lifetime only: they hand it no message, so
	// their generator never opens a relay socket.
	perm := r.permissionHandler("udp", uint16(discoveryListener.Port))
	for _, c := range alternates {
		pcs = append(pcs, turn.PacketConnConfig{PacketConn: c, RelayAddressGenerator: newAddressGenerator(r), PermissionHandler: perm})
	}
	return pcs, ls, nil
}

// tlsHandshakeTimeout bounds a TLS or DTLS handshake.
const tlsHandshakeTimeout = 10 * time.Second

// newEdge connects the client-facing wrappers to the relay's gate,
// limits, allocation table, metrics and logs.
func (r *Relay) newEdge() *edge {
	m := r.metrics
	return &edge{
		gate:       r.bindingGate(r.gate),
		signAnswer: r.signAnswer,
		noteAnswer: r.noteReservation,
		rejectFrame: func(reason string) {
			m.framesRejected.WithLabelValues(reason).Inc()
			r.rlog.info("frame:"+reason, "invalid frame dropped", "reason", reason)
		},
		closeConn: func(reason string) {
			m.connsClosed.WithLabelValues(reason).Inc()
			r.rlog.info("close:"+reason, "connection closed", "reason", reason)
		},
		refuseConn: func(reason string, err error) {
			m.connsRefused.WithLabelValues(reason).Inc()
			if err != nil {
				r.rlog.warn("refuse:"+reason, "connection refused", "reason", reason, "error", err.Error())
			} else {
				r.rlog.info("refuse:"+reason, "connection refused", "reason", reason)
			}
		},
		listenerDied: func(addr net.Addr, err error) {
			m.listenersDead.Set(float64(r.deadListeners.Add(1)))
			r.log.Error("listener stopped: the relay is no longer ready", "address", addrString(addr), "error", err.Error())
		},
		limits: func() connLimits {
			l := r.current().cfg.Limits
			total := l.Connections
			if total == 0 {
				total = r.defaultConnections
			}
			return connLimits{perSource: l.ConnectionsPerSource, total: total,
				firstMessage: l.FirstMessageTimeout.Duration, idle: l.IdleTimeout.Duration,
				tlsHandshakeTimeout: min(tlsHandshakeTimeout, l.FirstMessageTimeout.Duration)}
		},
		holdsAllocation: func(client, local net.Addr) bool {
			k, ok := keyFor(client, local)
			return ok && r.allocs.has(k)
		},
		conns: r.conns,
	}
}

// edgeFor is the relay's edge with the gate of the listener socket whose
// relay sockets gen opens.
func (r *Relay) edgeFor(gen *relayAddressGenerator) *edge {
	e := *r.edge
	e.gate = r.bindingGate(r.gateFor(gen))
	return &e
}

// listenUDP opens udpSocketsPerListener sockets (default one per CPU) on
// the same address with SO_REUSEPORT: the kernel spreads clients over them
// by a hash of their address, and pion runs one read loop per socket, so
// UDP relaying uses every core. Each socket has its own address generator,
// as it has its own pion allocation table.
func (r *Relay) listenUDP(addr string) ([]net.PacketConn, []*relayAddressGenerator, error) {
	n := r.cfg.UDPSocketsPerListener
	if n == 0 {
		n = runtime.NumCPU()
	}
	lc := net.ListenConfig{Control: reusePort}
	var conns []net.PacketConn
	var gens []*relayAddressGenerator
	for range n {
		c, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, nil, err
		}
		gen := newAddressGenerator(r)
		cc, err := newClientPacketConn(c.(*net.UDPConn), r.edgeFor(gen))
		if err != nil {
			_ = c.Close()
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, nil, err
		}
		conns = append(conns, cc)
		gens = append(gens, gen)
	}
	return conns, gens, nil
}

// newClientPacketConn wraps a UDP listener socket for pion: batched reads,
// the edge's checks, and socket buffers large enough for bursts.
func newClientPacketConn(c *net.UDPConn, e *edge) (*clientPacketConn, error) {
	setSocketBuffers(c, listenerBufferSize)
	batch, err := newRecvBatch(c)
	if err != nil {
		return nil, err
	}
	return &clientPacketConn{PacketConn: c, batch: batch, edge: e}, nil
}

// listenStream opens a TCP, TLS or DTLS listener.
func (r *Relay) listenStream(l config.Listener, addr string, e *edge) (net.Listener, error) {
	switch l.Protocol {
	case config.TCP:
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return &clientListener{Listener: ln, edge: e}, nil
	case config.TLS:
		certs, err := r.certReloaderFor(l)
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		tlsLn := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.getCertificate})
		return &clientListener{Listener: tlsLn, edge: e}, nil
	case config.DTLS:
		certs, err := r.certReloaderFor(l)
		if err != nil {
			return nil, err
		}
		udpAddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, err
		}
		ln, err := dtls.Listen("udp", udpAddr, &dtls.Config{
			GetCertificate:       func(*dtls.ClientHelloInfo) (*tls.Certificate, error) { return certs.getCertificate(nil) },
			ExtendedMasterSecret: dtls.RequireExtendedMasterSecret,
		})
		if err != nil {
			return nil, err
		}
		return &clientListener{Listener: ln, edge: e, datagram: true}, nil
	}
	return nil, fmt.Errorf("unknown protocol %q", l.Protocol)
}

// certReloader serves a certificate from PEM files and swaps it when the
// files' content changes (cert-manager renewals, Secret updates), so TLS
// and DTLS listeners never need a restart for a new certificate.
type certReloader struct {
	certFile, keyFile string

	mu              sync.RWMutex
	cert            *tls.Certificate
	certPEM, keyPEM []byte
}

// certReloaderFor shares one reloader between listeners using the same files.
func (r *Relay) certReloaderFor(l config.Listener) (*certReloader, error) {
	for _, c := range r.certs {
		if c.certFile == l.CertFile && c.keyFile == l.KeyFile {
			return c, nil
		}
	}
	c := &certReloader{certFile: l.CertFile, keyFile: l.KeyFile}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	r.certs = append(r.certs, c)
	return c, nil
}

// reload re-reads the files; changed reports whether a new certificate is
// now served. A broken pair keeps the previous certificate.
func (c *certReloader) reload() (changed bool, err error) {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, err
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, err
	}
	c.mu.RLock()
	same := bytes.Equal(certPEM, c.certPEM) && bytes.Equal(keyPEM, c.keyPEM)
	c.mu.RUnlock()
	if same {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("%s/%s: %w", c.certFile, c.keyFile, err)
	}
	c.mu.Lock()
	c.cert, c.certPEM, c.keyPEM = &cert, certPEM, keyPEM
	c.mu.Unlock()
	return true, nil
}

func (c *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}
