// Package config is the relay's configuration format: the operator renders it
// into the relay ConfigMap (relay.yaml) and the credential Secret
// (credentials.yaml); `turnpike relay` parses, validates and hot-reloads it.
//
// Two files, because they change at different rates and have different
// sensitivity: relay.yaml is public knowledge (listeners, policy, addresses),
// credentials.yaml holds long-term keys and shared secrets.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Version is the only relay.yaml / credentials.yaml format version this build reads.
const Version = "turnpike.dev/relay/v1"

// File names inside the mounted ConfigMap and Secret volumes.
const (
	RelayFile       = "relay.yaml"
	CredentialsFile = "credentials.yaml"
)

// Protocol is a client-facing transport of a listener.
type Protocol string

const (
	UDP  Protocol = "UDP"
	TCP  Protocol = "TCP"
	TLS  Protocol = "TLS"
	DTLS Protocol = "DTLS"
)

// Relay is relay.yaml.
type Relay struct {
	Version string `json:"version"`
	// Realm is the TURN realm; long-term keys are derived with it.
	Realm string `json:"realm"`
	// Listeners are the client-facing sockets. Changing them needs a restart.
	Listeners []Listener `json:"listeners"`
	// UDPSocketsPerListener is how many SO_REUSEPORT sockets serve each UDP
	// listener; 0 means one per CPU.
	UDPSocketsPerListener int `json:"udpSocketsPerListener,omitempty"`
	// RelayPortRange bounds the ports allocations relay from.
	RelayPortRange PortRange `json:"relayPortRange"`
	// TCPRelay enables RFC 6062 TCP allocations.
	TCPRelay bool `json:"tcpRelay,omitempty"`
	// Addresses says which address to advertise and bind.
	Addresses Addresses `json:"addresses"`
	// PeerPolicy decides which peers clients may reach (on top of the built-in deny sets).
	PeerPolicy PeerPolicy `json:"peerPolicy,omitempty"`
	// Quotas limits what one user, one allocation and the whole relay may use.
	Quotas Quotas `json:"quotas,omitempty"`
	// Limits bound what a client can hold or cost before and outside its
	// allocations: stream connections, idle time, failed authentication.
	Limits Limits `json:"limits,omitzero"`
	// STUN says which STUN Binding requests the relay answers.
	STUN STUN `json:"stun,omitzero"`
	// FastPath relays bound UDP channels in the kernel. Changing it needs a restart.
	FastPath FastPath `json:"fastPath,omitempty"`
	// Internal is the metrics and health listener; never the public TURN ports.
	Internal Internal `json:"internal"`
	// DrainGracePeriod is how long existing allocations keep relaying after SIGTERM.
	DrainGracePeriod Duration `json:"drainGracePeriod,omitempty"`
	// Log configures the relay's slog output.
	Log Log `json:"log,omitempty"`
}

// Listener is one client-facing socket (a group of sockets for UDP).
type Listener struct {
	Name     string   `json:"name"`
	Protocol Protocol `json:"protocol"`
	Port     int      `json:"port"`
	// CertFile and KeyFile are PEM files for TLS and DTLS, reloaded when they change.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// FastPath is the eBPF fast path (Linux): once a client binds a channel
// over UDP, a TC program relays its ChannelData to and from the peer in the
// kernel. With Socket set, the program belongs to the fast-path agent
// (`turnpike fastpath`), a separate process that holds the capabilities
// the relay does not; without it the relay loads the program itself (which
// needs root, CAP_BPF and CAP_NET_ADMIN: development and benchmarks).
type FastPath struct {
	// Mode is Auto (use the fast path where it loads, else relay in
	// userspace and say why), Enabled (refuse to start without it) or
	// Disabled. Unset means Enabled when the older Enabled is true, else
	// Disabled.
	Mode FastPathMode `json:"mode,omitempty"`
	// Enabled is the older spelling of mode: Enabled.
	Enabled bool `json:"enabled,omitempty"`
	// Interfaces are the network interfaces whose ingress the program
	// attaches to. Empty means the interfaces that hold the bind addresses
	// (every interface with an address when none is set) and lo.
	Interfaces []string `json:"interfaces,omitempty"`
	// Socket is the fast-path agent's Unix socket.
	Socket string `json:"socket,omitempty"`
}

// FastPathMode is fastPath.mode.
type FastPathMode string

const (
	FastPathAuto     FastPathMode = "Auto"
	FastPathEnabled  FastPathMode = "Enabled"
	FastPathDisabled FastPathMode = "Disabled"
)

// EffectiveMode is Mode, or what the older Enabled says when Mode is unset.
func (f FastPath) EffectiveMode() FastPathMode {
	switch {
	case f.Mode != "":
		return f.Mode
	case f.Enabled:
		return FastPathEnabled
	}
	return FastPathDisabled
}

// STUN configures the answers to clients' STUN Binding requests (not to be
// confused with addresses.stun, which asks other servers).
type STUN struct {
	// Classic answers RFC 3489 Binding requests, which carry no magic
	// cookie. Unset means true: only an explicit false turns it off.
	Classic *bool `json:"classic,omitempty"`
	// BehaviorDiscovery, when set, answers NAT behaviour discovery (RFC
	// 5780) on the first UDP listener. Changing it needs a restart: it
	// opens sockets.
	BehaviorDiscovery *BehaviorDiscovery `json:"behaviorDiscovery,omitempty"`
}

// BehaviorDiscovery is RFC 5780's server side. The first UDP listener, on
// the bind address of each family, is the primary address and port; the
// alternate address and AlternatePort make the other three. Without an
// alternate address the relay answers as RFC 5780 section 6 requires of a
// server with one address: RESPONSE-ORIGIN, RESPONSE-PORT and PADDING, but
// no OTHER-ADDRESS, and 420 to a CHANGE-REQUEST.
type BehaviorDiscovery struct {
	// AlternatePort is the second port, a UDP port no listener uses.
	AlternatePort int `json:"alternatePort"`
	// AlternateAddresses are candidates for the node's second address:
	// the relay uses, per family, the first it can bind that is not its
	// bind address. One list serves a whole cluster: each node binds only
	// its own.
	AlternateAddresses []string `json:"alternateAddresses,omitempty"`
}

// ClassicEnabled reports whether classic Binding requests are answered.
func (s STUN) ClassicEnabled() bool { return s.Classic == nil || *s.Classic }

// PortRange is an inclusive range of ports.
type PortRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// Addresses describes where the relay binds and what it advertises as
// XOR-RELAYED-ADDRESS. The relay looks its node up by NODE_NAME in Nodes;
// a standalone relay uses External.
type Addresses struct {
	// Bind is the local addresses sockets bind to. Empty: $HOST_IP (the
	// downward API's status.hostIP) if set, else all addresses.
	Bind []string `json:"bind,omitempty"`
	// External is advertised when this relay's node has no entry in Nodes.
	External []string `json:"external,omitempty"`
	// Nodes maps a node name to the addresses the operator resolved for it.
	Nodes map[string]NodeAddresses `json:"nodes,omitempty"`
	// NodeFile, when set, is a file holding this relay's own node entry as
	// JSON (NodeAddresses), which takes the place of Nodes: the operator
	// writes it into the relay pod's annotation, and the kubelet projects it
	// into the pod (downward API), so one node's change is one small write
	// instead of a relay.yaml listing every node. An empty or missing file
	// is no entry. The relay reads it on every reload.
	NodeFile string `json:"nodeFile,omitempty"`
	// STUN, when set, makes the relay discover its public address itself.
	STUN *STUNDiscovery `json:"stun,omitempty"`
}

// NodeAddresses is one node's published addresses, at most one per family.
type NodeAddresses struct {
	External []string `json:"external,omitempty"`
	// Source says where the operator found the address (for humans and /status).
	Source string `json:"source,omitempty"`
}

// STUNDiscovery asks STUN servers for this relay's mapped address.
type STUNDiscovery struct {
	// Servers are host:port of STUN servers (UDP), tried in order.
	Servers []string `json:"servers"`
	// Interval is how often the relay asks again; zero means 60s.
	Interval Duration `json:"interval,omitzero"`
}

// PeerPolicy adds to the built-in peer rules. The hard-deny set (loopback,
// link-local, unspecified, multicast, broadcast) cannot be allowed.
type PeerPolicy struct {
	// Allow re-admits parts of the default-deny set (private ranges, cluster
	// ranges, the node's own addresses).
	Allow []string `json:"allow,omitempty"`
	// Deny adds ranges to refuse; it wins over Allow.
	Deny []string `json:"deny,omitempty"`
	// ClusterCIDRs are the pod and service ranges, denied by default.
	ClusterCIDRs []string `json:"clusterCIDRs,omitempty"`
}

// Quotas are limits; zero means unlimited.
type Quotas struct {
	AllocationsPerUser int `json:"allocationsPerUser,omitempty"`
	AllocationsTotal   int `json:"allocationsTotal,omitempty"`
	// BandwidthPerAllocation is bytes per second, each direction.
	BandwidthPerAllocation   int64 `json:"bandwidthPerAllocation,omitempty"`
	PermissionsPerAllocation int   `json:"permissionsPerAllocation,omitempty"`
	ChannelsPerAllocation    int   `json:"channelsPerAllocation,omitempty"`
}

// Limits protect the relay from clients that never authenticate or never
// stop trying. Zero means the default (see setDefaults).
type Limits struct {
	// ConnectionsPerSource caps the TCP and TLS connections one client
	// address may hold at once.
	ConnectionsPerSource int `json:"connectionsPerSource,omitempty"`
	// Connections caps TCP and TLS connections in total; the default is half
	// the process's file descriptor limit, so relay sockets always have room.
	Connections int `json:"connections,omitempty"`
	// FirstMessageTimeout is how long a new TCP or TLS connection (including
	// its TLS handshake) may take to send its first whole message.
	FirstMessageTimeout Duration `json:"firstMessageTimeout,omitzero"`
	// IdleTimeout closes a TCP or TLS connection that holds no allocation
	// and sent no whole message for this long. A connection that holds an
	// allocation is never closed for idling: the allocation's own lifetime,
	// renewed by Refresh, bounds it.
	IdleTimeout Duration `json:"idleTimeout,omitzero"`
	// AuthFailuresPerSecond is how many failed authentications per second
	// one client address may cause (AuthFailureBurst at once) before its
	// requests are dropped unanswered for a while.
	AuthFailuresPerSecond float64 `json:"authFailuresPerSecond,omitempty"`
	AuthFailureBurst      int     `json:"authFailureBurst,omitempty"`
}

// Internal is the listener for /metrics, /livez, /readyz and /status.
type Internal struct {
	// Address to bind; empty means $HOST_IP, else 127.0.0.1.
	Address     string `json:"address,omitempty"`
	MetricsPort int    `json:"metricsPort"`
	// HealthPort may equal MetricsPort, in which case one listener serves both.
	HealthPort int `json:"healthPort"`
}

// Log configures logging.
type Log struct {
	Level  string `json:"level,omitempty"`  // debug, info, warn, error
	Format string `json:"format,omitempty"` // json, text
}

// Credentials is credentials.yaml. It never holds a plaintext password.
type Credentials struct {
	Version string `json:"version"`
	// Generation increases whenever the operator changes the set.
	Generation int64 `json:"generation"`
	// Users are static long-term credentials.
	Users []User `json:"users,omitempty"`
	// SharedSecrets are TURN REST API secrets (draft-uberti-behave-turn-rest),
	// current and previous during rotation.
	SharedSecrets []SharedSecret `json:"sharedSecrets,omitempty"`
}

// User is a static user: its long-term key MD5(username:realm:password), hex.
// A username may appear more than once while a password rotates: the relay
// accepts any of its keys that is inside its window.
type User struct {
	Username string `json:"username"`
	Key      string `json:"key"`
	// NotAfter, when set, is when this key stops being accepted.
	NotAfter *time.Time `json:"notAfter,omitempty"`
}

// SharedSecret is one REST API secret and the window in which it is accepted.
type SharedSecret struct {
	// Name identifies the secret in logs and metrics (TurnCredential name and revision).
	Name      string     `json:"name,omitempty"`
	Secret    string     `json:"secret"`
	NotBefore *time.Time `json:"notBefore,omitempty"`
	NotAfter  *time.Time `json:"notAfter,omitempty"`
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// SocketHash identifies the settings that need new sockets: the operator puts
// it in a pod annotation so only these roll the relay pods, and the relay
// compares it on reload to know a change needs a restart.
func (r *Relay) SocketHash() string {
	socket := struct {
		Listeners             []Listener
		UDPSocketsPerListener int
		RelayPortRange        PortRange
		TCPRelay              bool
		Bind                  []string
		Internal              Internal
		FastPath              FastPath
		BehaviorDiscovery     *BehaviorDiscovery `json:",omitempty"`
	}{r.Listeners, r.UDPSocketsPerListener, r.RelayPortRange, r.TCPRelay, r.Addresses.Bind, r.Internal, r.FastPath, r.STUN.BehaviorDiscovery}
	b, _ := json.Marshal(socket) // plain structs: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
