package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The relay parses relay.yaml and credentials.yaml from mounted volumes
// and re-parses them on every change, so neither parser may panic on any
// input, and what they accept must survive the operator's round trip:
// rendered with Marshal and parsed again, it must render the same.

// fullRelay is a relay.yaml with every field set, so the fuzzer starts
// from all of them.
const fullRelay = `version: turnpike.dev/relay/v1
realm: example.org
listeners:
  - {name: udp, protocol: UDP, port: 3478}
  - {name: tcp, protocol: TCP, port: 3478}
  - {name: tls, protocol: TLS, port: 5349, certFile: /tls/tls.crt, keyFile: /tls/tls.key}
  - {name: dtls, protocol: DTLS, port: 5349, certFile: /tls/tls.crt, keyFile: /tls/tls.key}
udpSocketsPerListener: 2
relayPortRange: {min: 49152, max: 65535}
tcpRelay: true
addresses:
  bind: ["10.0.0.5", "fd00::5"]
  external: ["203.0.113.5"]
  nodes:
    node-a: {external: ["203.0.113.7", "2001:db8::7"], source: ExternalIP}
  stun: {servers: ["stun.example.org:3478"], interval: 30s}
peerPolicy:
  allow: ["10.1.0.0/16", "::ffff:10.2.0.0/112"]
  deny: ["203.0.113.0/24"]
  clusterCIDRs: ["10.244.0.0/16", "10.96.0.0/12", "fd00:10::/56"]
quotas:
  allocationsPerUser: 10
  allocationsTotal: 1000
  bandwidthPerAllocation: 1000000
  permissionsPerAllocation: 10
  channelsPerAllocation: 10
limits:
  connectionsPerSource: 64
  connections: 4096
  firstMessageTimeout: 10s
  idleTimeout: 1m
  authFailuresPerSecond: 5
  authFailureBurst: 20
fastPath: {enabled: true, interfaces: [eth0]}
internal: {address: 127.0.0.1, metricsPort: 9641, healthPort: 9642}
drainGracePeriod: 30s
log: {level: debug, format: text}
`

const fullCredentials = `version: turnpike.dev/relay/v1
generation: 7
users:
  - {username: alice, key: 7e92ed8dce9d4662b9a6acc3a3ba4f53}
  - {username: alice, key: 0123456789abcdef0123456789abcdef, notAfter: "2030-01-02T03:04:05Z"}
sharedSecrets:
  - {name: s-1, secret: example-shared-secret-0123456789, notBefore: "2020-01-01T00:00:00Z", notAfter: "2030-01-01T00:00:00Z"}
  - {secret: previous-shared-secret-0123456789}
`

// addSeedFile adds a file of the repository's examples to the corpus.
func addSeedFile(f *testing.F, path string) {
	f.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
}

func FuzzParseRelay(f *testing.F) {
	f.Add([]byte(fullRelay))
	f.Add([]byte("version: turnpike.dev/relay/v1\nrealm: r\nlisteners: [{name: u, protocol: UDP, port: 1}]\n"))
	f.Add([]byte("limits: {authFailuresPerSecond: .nan, idleTimeout: -1s}\n"))
	addSeedFile(f, filepath.Join("..", "testdata", "standalone", RelayFile))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRelay(data)
		if err != nil {
			return
		}
		out, err := Marshal(r)
		if err != nil {
			t.Fatalf("Marshal of an accepted relay.yaml: %v", err)
		}
		again, err := ParseRelay(out)
		if err != nil {
			t.Fatalf("an accepted relay.yaml does not parse after Marshal: %v\n%s", err, out)
		}
		// Rendering again gives the same text: nothing was lost or changed
		// (an empty list and no list are the same here).
		if out2, _ := Marshal(again); !bytes.Equal(out, out2) {
			t.Fatalf("relay.yaml changed in a round trip:\n%s\n---\n%s", out, out2)
		}
		if r.SocketHash() != again.SocketHash() {
			t.Fatal("SocketHash changed in a round trip")
		}
	})
}

func FuzzParseCredentials(f *testing.F) {
	f.Add([]byte(fullCredentials))
	f.Add([]byte("version: turnpike.dev/relay/v1\ngeneration: 1\n"))
	f.Add([]byte("version: turnpike.dev/relay/v1\nusers: [{username: \"\", key: zz}]\n"))
	addSeedFile(f, filepath.Join("..", "testdata", "standalone", CredentialsFile))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCredentials(data)
		if err != nil {
			return
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("Marshal of accepted credentials: %v", err)
		}
		again, err := ParseCredentials(out)
		if err != nil {
			t.Fatalf("accepted credentials do not parse after Marshal: %v\n%s", err, out)
		}
		if out2, _ := Marshal(again); !bytes.Equal(out, out2) {
			t.Fatalf("credentials.yaml changed in a round trip:\n%s\n---\n%s", out, out2)
		}
	})
}
