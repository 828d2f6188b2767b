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
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// FreePort is a port free right now for both TCP and UDP on 127.0.0.1, and
// for UDP on ::1 where the machine has IPv6 loopback, so one port number
// serves a listener of any protocol and family.
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
		if ok {
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "turnpike test"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
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

// WriteIfChanged replaces a file through a rename when its content differs,
// as the kubelet updates mounted volumes, so a reader never sees half a file
// and an unchanged file keeps its modification time.
func WriteIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// DownwardAPIFiles is what the kubelet writes for a downward-API volume of
// pod: each item's field, by its path. Only the metadata fields are
// emulated (name, namespace, one label or annotation); a missing
// label or annotation is an empty file, as with the kubelet.
func DownwardAPIFiles(src *corev1.DownwardAPIVolumeSource, pod *corev1.Pod) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, item := range src.Items {
		if item.FieldRef == nil {
			return nil, fmt.Errorf("downward API file %s: only fieldRef is emulated", item.Path)
		}
		v, err := podField(pod, item.FieldRef.FieldPath)
		if err != nil {
			return nil, fmt.Errorf("downward API file %s: %w", item.Path, err)
		}
		files[item.Path] = []byte(v)
	}
	return files, nil
}

func podField(pod *corev1.Pod, path string) (string, error) {
	for prefix, values := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return values[strings.TrimSuffix(key, "']")], nil
		}
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	}
	return "", fmt.Errorf("field %s is not emulated", path)
}
