package netlab

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/pion/stun/v4"
)

// STUNServer is a minimal STUN server (RFC 8489 Binding over UDP) for tests.
// It answers with the source address it sees, as a real server does, unless
// told to report another address or to fail. It needs no root; lab tests
// run it on a socket opened inside a namespace (Namespace.Do).
type STUNServer struct {
	conn net.PacketConn

	mu      sync.Mutex
	mapped  netip.Addr // reported instead of the source address, if valid
	failing bool       // answer 500 instead
	seen    int        // Binding requests answered
}

// StartSTUNServer serves on conn until the test ends.
func StartSTUNServer(t testing.TB, conn net.PacketConn) *STUNServer {
	s := &STUNServer{conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve()
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return s
}

// Addr is the server's address, e.g. for addresses.stun.servers.
func (s *STUNServer) Addr() netip.AddrPort {
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// SetMapped makes the server report addr (with the source port) instead of
// the source address; an invalid addr restores the real behaviour.
func (s *STUNServer) SetMapped(addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mapped = addr
}

// SetFailing makes the server answer every Binding request with an error
// response (500), or normally again.
func (s *STUNServer) SetFailing(failing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = failing
}

// Requests is how many Binding requests the server has answered.
func (s *STUNServer) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

func (s *STUNServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		req := &stun.Message{Raw: append([]byte{}, buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		if res := s.answer(req, from.(*net.UDPAddr).AddrPort()); res != nil {
			_, _ = s.conn.WriteTo(res.Raw, from)
		}
	}
}

func (s *STUNServer) answer(req *stun.Message, from netip.AddrPort) *stun.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen++
	id := stun.NewTransactionIDSetter(req.TransactionID)
	if s.failing {
		return stun.MustBuild(id, stun.BindingError, stun.CodeServerError, stun.Fingerprint)
	}
	mapped := from
	if s.mapped.IsValid() {
		mapped = netip.AddrPortFrom(s.mapped, from.Port())
	}
	xor := &stun.XORMappedAddress{IP: mapped.Addr().Unmap().AsSlice(), Port: int(mapped.Port())}
	return stun.MustBuild(id, stun.BindingSuccess, xor, stun.Fingerprint)
}
