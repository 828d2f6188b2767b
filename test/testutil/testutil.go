// Package testutil holds small helpers that tests across the project share:
// free ports, a self-signed certificate, a log sink safe for concurrent use.
package testutil

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// FreePort is a port free right now for both TCP and UDP on 127.0.0.1, and
// for UDP on ::1 where the machine has IPv6 loopback, so one port number
// serves a listener of any protocol and family. It never returns a port it
// returned before in this process: the kernel may hand the same ephemeral
// port to two binds in a row once the first is closed, and a test that asks
// for two ports before binding either would then get one port twice.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := free("udp", "127.0.0.1", port) && (!haveIPv6Loopback() || free("udp", "::1", port))
		_ = l.Close()
		if ok && handOut(port) {
			return port
		}
	}
	t.Fatal("no port free on both TCP and UDP")
	return 0
}

// FreeAddr is "127.0.0.1:<FreePort>".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// handOut records port as given to a caller; false if it already was.
func handOut(port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	return true
}

func free(network, host string, port int) bool {
	c, err := net.ListenPacket(network, net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

var haveIPv6Loopback = sync.OnceValue(func() bool {
	c, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
})

// WriteSelfSignedCert writes tls.crt and tls.key into dir: a P-256
// certificate for localhost, 127.0.0.1, ::1 and ips, valid for a day.
func WriteSelfSignedCert(t testing.TB, dir string, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := SelfSignedCert("localhost", append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...)...)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// SelfSignedCert is a P-256 server certificate for dnsName and ips, valid
// for a day, and its key, both PEM-encoded.
func SelfSignedCert(dnsName string, ips ...net.IP) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: dnsName},
		DNSNames:     []string{dnsName},
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// SyncBuffer is a log sink that goroutines may write while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// AnswersSTUN says whether a STUN server at addr answers a Binding request
// over UDP within a second.
func AnswersSTUN(addr string) bool {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(req.Raw); err != nil {
		return false
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	return err == nil && stun.IsMessage(buf[:n])
}

// WaitForSTUN waits (up to 20 s) until a STUN server at each address
// answers over UDP: a server listening on TCP may not read UDP yet.
func WaitForSTUN(t testing.TB, addrs ...string) {
	t.Helper()
	for _, addr := range addrs {
		deadline := time.Now().Add(20 * time.Second)
		for !AnswersSTUN(addr) {
			if time.Now().After(deadline) {
				t.Fatalf("no STUN answer over UDP from %s after 20s", addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
