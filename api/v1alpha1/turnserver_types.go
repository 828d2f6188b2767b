package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TurnServerSpec says where relays run, which ports they listen on, and what
// they allow.
// +kubebuilder:validation:XValidation:rule="self.listeners.all(l, l.port < self.relayPortRange.min || l.port > self.relayPortRange.max)",message="a listener port must not be inside relayPortRange: relays would collide with their own allocations"
// +kubebuilder:validation:XValidation:rule="!has(self.behaviorDiscovery) || self.listeners.exists(l, l.protocol == 'UDP')",message="behaviorDiscovery needs a UDP listener: NAT behaviour discovery runs over UDP"
// +kubebuilder:validation:XValidation:rule="!has(self.behaviorDiscovery) || self.listeners.all(l, !(l.protocol in ['UDP', 'DTLS']) || l.port != self.behaviorDiscovery.alternatePort)",message="behaviorDiscovery.alternatePort must not be the port of a UDP or DTLS listener"
// +kubebuilder:validation:XValidation:rule="!has(self.behaviorDiscovery) || self.behaviorDiscovery.alternatePort < self.relayPortRange.min || self.behaviorDiscovery.alternatePort > self.relayPortRange.max",message="behaviorDiscovery.alternatePort must not be inside relayPortRange: relays would collide with their own allocations"
type TurnServerSpec struct {
	// Realm is the TURN realm clients authenticate in, usually your domain.
	// Static credentials' long-term keys are derived from it.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.trim() != ''",message="realm must not be empty"
	Realm string `json:"realm"`

	// Listeners are the client-facing ports every relay node opens.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(l, self.exists_one(m, m.port == l.port && (m.protocol in ['UDP', 'DTLS']) == (l.protocol in ['UDP', 'DTLS'])))",message="two listeners cannot share a port on the same transport (UDP and DTLS use UDP; TCP and TLS use TCP)"
	Listeners []Listener `json:"listeners"`

	// RelayPortRange is the range of host ports allocations relay from. It
	// must not overlap another TurnServer's on the same nodes.
	// +kubebuilder:default={min: 49152, max: 65535}
	// +optional
	RelayPortRange PortRange `json:"relayPortRange,omitzero"`

	// TCPRelay allows clients to ask for TCP allocations (RFC 6062).
	// +optional
	TCPRelay bool `json:"tcpRelay,omitempty"`

	// Placement chooses the nodes that run a relay.
	// +optional
	Placement Placement `json:"placement,omitempty"`

	// Relay configures the relay pods.
	// +optional
	Relay RelayPodSettings `json:"relay,omitempty"`

	// PeerPolicy narrows or widens which peers clients may reach through the
	// relay, on top of built-in rules. Loopback, link-local (including cloud
	// metadata at 169.254.169.254), unspecified, multicast and broadcast
	// addresses are always refused; private ranges, the cluster's pod and
	// service ranges and the nodes' own addresses are refused unless allowed.
	// +optional
	PeerPolicy PeerPolicy `json:"peerPolicy,omitempty"`

	// Quotas limit what one user, one allocation and one relay may use.
	// +optional
	Quotas Quotas `json:"quotas,omitempty"`

	// MetricsPort serves Prometheus metrics on each node's internal address.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=9641
	// +optional
	MetricsPort int32 `json:"metricsPort,omitempty"`

	// HealthPort serves /livez, /readyz and /status on each node's internal
	// address. It may equal MetricsPort.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=9642
	// +optional
	HealthPort int32 `json:"healthPort,omitempty"`

	// Hostname is the DNS name clients use, for teams that run their own DNS:
	// status.urls use it instead of node addresses, and when external-dns's
	// DNSEndpoint CRD is installed the operator publishes the ready nodes'
	// addresses under it.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="hostname must be a lower-case DNS name such as turn.example.com"
	// +optional
	Hostname string `json:"hostname,omitempty"`

	// STUN makes the relays of nodes without a known public address (no
	// spec.externalAddresses entry, annotation or ExternalIP) discover it
	// themselves by asking STUN servers, e.g. behind a cloud NAT.
	// +optional
	STUN *STUNDiscovery `json:"stun,omitempty"`

	// ClassicSTUN answers Binding requests of RFC 3489 clients (old VoIP
	// phones, game consoles, embedded stacks), which carry no magic cookie,
	// with their mapped address. A classic request asking for a changed IP
	// or port is refused (420), with or without behaviorDiscovery. Set
	// false to drop such requests; RFC 5389 Binding requests are always
	// answered.
	// +kubebuilder:default=true
	// +optional
	ClassicSTUN *bool `json:"classicSTUN,omitempty"`

	// BehaviorDiscovery makes every relay answer NAT behaviour discovery
	// (RFC 5780) on the first UDP listener, so that clients (`turnpike
	// probe --nat`, turnutils_natdiscovery, stunclient) can learn what
	// their NAT does to UDP. It needs a second address on the node: the
	// relay uses the first of alternateAddresses its node has. Without one
	// the relay still answers with RESPONSE-ORIGIN, RESPONSE-PORT and
	// PADDING, but refuses requests to change address (420), as RFC 5780
	// requires of a server with one address. The alternate port must be
	// open in the firewall (UDP) on both addresses. Changing it restarts
	// the relay pods.
	// +optional
	BehaviorDiscovery *BehaviorDiscovery `json:"behaviorDiscovery,omitempty"`

	// ExternalAddresses fixes the public address of named nodes, for nodes
	// behind a NAT that Kubernetes does not know about. It wins over the
	// node's turnpike.dev/external-ip annotation and its ExternalIP.
	// +listType=map
	// +listMapKey=nodeName
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	ExternalAddresses []NodeExternalAddress `json:"externalAddresses,omitempty"`

	// URLNodesPerFamily is how many ready nodes per IP family status.urls
	// and the credential Secrets' iceServers.json name when hostname is
	// unset. A browser gathers candidates from every TURN URL it is given,
	// so keep it small; the chosen nodes change only when one stops serving.
	// The issuing endpoint chooses as many per request, from all ready nodes.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	// +kubebuilder:default=4
	// +optional
	URLNodesPerFamily int32 `json:"urlNodesPerFamily,omitempty"`
}

// Protocol is a client-facing transport.
// +kubebuilder:validation:Enum=UDP;TCP;TLS;DTLS
type Protocol string

const (
	ProtocolUDP  Protocol = "UDP"
	ProtocolTCP  Protocol = "TCP"
	ProtocolTLS  Protocol = "TLS"
	ProtocolDTLS Protocol = "DTLS"
)

// Listener is one client-facing port.
// +kubebuilder:validation:XValidation:rule="!(self.protocol in ['TLS', 'DTLS']) || has(self.tlsSecretRef)",message="TLS and DTLS listeners need tlsSecretRef naming a kubernetes.io/tls Secret"
// +kubebuilder:validation:XValidation:rule="self.protocol in ['TLS', 'DTLS'] || !has(self.tlsSecretRef)",message="tlsSecretRef is only for TLS and DTLS listeners"
type Listener struct {
	// Name identifies the listener, e.g. "udp" or "turns".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Protocol is UDP, TCP, TLS (turns: over TCP) or DTLS (turns: over UDP).
	Protocol Protocol `json:"protocol"`
	// Port is the host port on every relay node.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// TLSSecretRef names a kubernetes.io/tls Secret in this namespace holding
	// the certificate for TLS and DTLS. Renewals are picked up without restart.
	// +optional
	TLSSecretRef *LocalObjectReference `json:"tlsSecretRef,omitempty"`
}

// PortRange is an inclusive range of ports.
// +kubebuilder:validation:XValidation:rule="self.min <= self.max",message="relayPortRange.min must not be greater than relayPortRange.max"
type PortRange struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Min int32 `json:"min"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Max int32 `json:"max"`
}

// Placement chooses relay nodes, as a pod's scheduling fields do.
type Placement struct {
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
}

// LogLevel is how much a relay logs.
// +kubebuilder:validation:Enum=debug;info;warn;error
type LogLevel string

// RelayPodSettings configures the relay pods.
type RelayPodSettings struct {
	// Image of the relay; defaults to the operator's own image.
	// +optional
	Image string `json:"image,omitempty"`
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// Resources of the relay container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// Threads is how many sockets serve each UDP listener (SO_REUSEPORT);
	// 0 means one per CPU the relay may use.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=256
	// +optional
	Threads int32 `json:"threads,omitempty"`
	// +kubebuilder:default=info
	// +optional
	LogLevel LogLevel `json:"logLevel,omitempty"`
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// DrainGracePeriod is how long a stopping relay keeps relaying existing
	// allocations while refusing new ones.
	// +kubebuilder:default="30s"
	// +optional
	DrainGracePeriod *metav1.Duration `json:"drainGracePeriod,omitempty"`
	// FastPath is the relay's eBPF fast path. Once a client has bound a
	// channel (ChannelBind) on an IPv4 UDP allocation over a UDP listener, a
	// TC program on the ingress of the node's interfaces relays that
	// channel's ChannelData to and from the peer in the kernel, without a
	// trip through the relay process. Everything else (IPv6, TCP, TLS and
	// DTLS, Send and Data indications, every STUN and TURN request) stays in
	// userspace.
	//
	// It needs Linux 6.6 or later (TCX attachment). The relay itself never
	// holds a capability for it: unless the mode is Disabled, the relay pod
	// gets a second container, "fastpath" (same image, `turnpike fastpath`),
	// which runs as root with every capability dropped except BPF, NET_ADMIN
	// and PERFMON, listens on no network port, loads the program and writes
	// its maps on the relay's behalf over a Unix socket in a shared emptyDir,
	// re-checking every channel against the peer policy. The relay container
	// stays UID 65532 with no capabilities (unless a port below 1024 needs
	// NET_BIND_SERVICE). Changing it restarts the relay pods.
	// +optional
	FastPath RelayFastPath `json:"fastPath,omitempty"`
}

// RelayFastPath is the relay's eBPF fast path (see
// RelayPodSettings.FastPath).
type RelayFastPath struct {
	// Mode is Auto (the default: the fast path wherever the node's kernel
	// and the fastpath container can load it, else userspace relaying and
	// the reason in the relay's /status and logs), Enabled (a relay whose
	// fast path cannot be had does not start) or Disabled (no fastpath
	// container at all).
	// +kubebuilder:validation:Enum=Auto;Enabled;Disabled
	// +kubebuilder:default=Auto
	// +optional
	Mode FastPathMode `json:"mode,omitempty"`
	// Enabled is the older switch: true means mode Enabled, whatever mode
	// says. Deprecated: use mode.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// (items:MaxLength below only bounds the rule's cost. It is 64, not 15:
	// a failed maxLength skips the rule, whose message says more than a bare
	// "Too long".)

	// Interfaces are the node's network interfaces whose ingress the
	// program attaches to: those that clients' and peers' packets arrive
	// on, e.g. ["eth0"]. Empty means the interfaces that hold the relay's
	// bind addresses (the node's address, status.hostIP) and lo.
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule=`self.matches('^[^/:\\s\\v]+$') && bytes(self).size() <= 15 && self != '.' && self != '..'`,message="fastPath.interfaces must be network interface names: 1-15 characters, no '/', ':' or whitespace, not '.' or '..'"
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
}

// FastPathMode is fastPath.mode.
type FastPathMode string

const (
	FastPathAuto     FastPathMode = "Auto"
	FastPathEnabled  FastPathMode = "Enabled"
	FastPathDisabled FastPathMode = "Disabled"
)

// EffectiveMode is the mode the relay gets: Enabled when the older enabled
// is true, Auto when mode is unset (an object the API server did not
// default, e.g. stored before mode existed).
func (f RelayFastPath) EffectiveMode() FastPathMode {
	switch {
	case f.Enabled:
		return FastPathEnabled
	case f.Mode == "":
		return FastPathAuto
	}
	return f.Mode
}

// CIDR is an IP prefix such as 10.0.0.0/8 or fd00::/8.
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.0.0.0/8 or fd00::/8"
type CIDR string

// IPAddress is an IPv4 or IPv6 address.
// +kubebuilder:validation:MaxLength=39
// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
type IPAddress string

// PeerPolicy adds to the built-in peer rules.
type PeerPolicy struct {
	// Allow re-admits ranges that are refused by default (private ranges,
	// cluster ranges, node addresses). It cannot admit loopback, link-local,
	// unspecified, multicast or broadcast addresses.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Allow []CIDR `json:"allow,omitempty"`
	// Deny refuses more ranges; it wins over Allow.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Deny []CIDR `json:"deny,omitempty"`
	// ClusterCIDRs are the cluster's pod and service ranges, refused by default.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ClusterCIDRs []CIDR `json:"clusterCIDRs,omitempty"`
}

// Quotas are limits; unset or 0 means unlimited.
type Quotas struct {
	// AllocationsPerUser caps concurrent allocations of one username on one
	// relay; more get 486 Allocation Quota Reached.
	// +kubebuilder:validation:Minimum=0
	// +optional
	AllocationsPerUser int32 `json:"allocationsPerUser,omitempty"`
	// AllocationsTotal caps concurrent allocations on one relay.
	// +kubebuilder:validation:Minimum=0
	// +optional
	AllocationsTotal int32 `json:"allocationsTotal,omitempty"`
	// BandwidthPerAllocation caps bytes per second relayed by one allocation
	// in each direction, e.g. "2Mi".
	// +optional
	BandwidthPerAllocation *resource.Quantity `json:"bandwidthPerAllocation,omitempty"`
	// PermissionsPerAllocation caps peer permissions of one allocation.
	// +kubebuilder:validation:Minimum=0
	// +optional
	PermissionsPerAllocation int32 `json:"permissionsPerAllocation,omitempty"`
	// ChannelsPerAllocation caps channel bindings of one allocation.
	// +kubebuilder:validation:Minimum=0
	// +optional
	ChannelsPerAllocation int32 `json:"channelsPerAllocation,omitempty"`
}

// STUNDiscovery lists the STUN servers relays ask for their public address.
type STUNDiscovery struct {
	// Servers are host:port of STUN servers, tried in order.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[^:\s]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$`
	Servers []string `json:"servers"`
}

// BehaviorDiscovery is RFC 5780's server side (see
// TurnServerSpec.BehaviorDiscovery).
type BehaviorDiscovery struct {
	// AlternatePort is the second UDP port, on the bind address and on the
	// alternate address; it must be free of listeners and of relayPortRange.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	AlternatePort int32 `json:"alternatePort"`
	// AlternateAddresses are the nodes' second addresses: each relay uses
	// the first one of its bind address's family that its node has (that
	// it can bind), so one list serves a whole cluster. The address must be
	// on the node's interfaces and reachable by clients as it is (no 1:1
	// NAT in front): clients are told to send to it.
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	AlternateAddresses []IPAddress `json:"alternateAddresses,omitempty"`
}

// NodeExternalAddress fixes a node's public addresses.
type NodeExternalAddress struct {
	// NodeName is the Node's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	NodeName string `json:"nodeName"`
	// Addresses are the node's public addresses, at most one per IP family.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	Addresses []IPAddress `json:"addresses"`
}

// AddressSource says where a node's published address came from.
type AddressSource string

const (
	AddressFromSpec       AddressSource = "Spec"
	AddressFromAnnotation AddressSource = "Annotation"
	AddressFromExternalIP AddressSource = "ExternalIP"
	AddressFromInternalIP AddressSource = "InternalIP"
	// AddressFromSTUN: the node's relay discovers its address itself; the
	// operator does not know it.
	AddressFromSTUN AddressSource = "STUN"
)

// MaxAttentionNodes caps status.attentionNodes: a TurnServer's status must
// not grow with the number of nodes (etcd refuses objects over 1.5 MiB).
const MaxAttentionNodes = 20

// TurnServerStatus is what the operator observed. Its size does not depend
// on the number of nodes: it holds counts, and names at most
// MaxAttentionNodes nodes. Each node's relay pod carries that node's detail.
type TurnServerStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Progressing, Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// DesiredNodes is how many nodes should run a relay.
	// +optional
	DesiredNodes int32 `json:"desiredNodes,omitempty"`
	// ReadyNodes is how many of them run a ready relay.
	// +optional
	ReadyNodes int32 `json:"readyNodes,omitempty"`
	// NodeSummary is "ready/desired", for kubectl get.
	// +optional
	NodeSummary string `json:"nodeSummary,omitempty"`
	// NodesNeedingAttention counts the selected nodes whose relay is not
	// ready or that have no known public address.
	// +optional
	NodesNeedingAttention int32 `json:"nodesNeedingAttention"`
	// AttentionNodes names the first of them by name, at most 20; the rest
	// are counted in NodesNeedingAttention only.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=20
	// +optional
	AttentionNodes []AttentionNode `json:"attentionNodes,omitempty"`
	// AddressSummary is the addresses in URLs, comma-separated, for kubectl get.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	AddressSummary string `json:"addressSummary,omitempty"`
	// URLs are the turn: and turns: URIs (RFC 7065) apps are given: those
	// of spec.hostname when it is set, else those of at most
	// spec.urlNodesPerFamily ready nodes per IP family.
	// +kubebuilder:validation:MaxItems=1024
	// +optional
	URLs []string `json:"urls,omitempty"`
	// FastPath counts the ready relays by where they relay, as their
	// /status said when the operator last read it (every minute). Unset
	// while spec.relay.fastPath.mode is Disabled. The FastPath condition
	// names some of the relays that relay in userspace.
	// +optional
	FastPath *FastPathSummary `json:"fastPath,omitempty"`
}

// ConditionFastPath is True when every relay that reported its fast path
// relays bound channels in the kernel, False when some relay in userspace
// (the fast-path agent is missing or failed), Unknown before any reported.
// A TurnServer whose fast path is Disabled has no such condition.
const ConditionFastPath = "FastPath"

// FastPathSummary counts a TurnServer's relays by where they relay.
type FastPathSummary struct {
	// KernelRelays have the fast path active: the kernel relays their
	// bound channels.
	KernelRelays int32 `json:"kernelRelays"`
	// UserspaceRelays have the fast path on (Auto) but not active, so they
	// relay everything in userspace.
	UserspaceRelays int32 `json:"userspaceRelays"`
}

// NodeProblem is why a node needs attention.
// +kubebuilder:validation:Enum=RelayNotReady;AddressNotPublic
type NodeProblem string

const (
	// NodeRelayNotReady: the node's relay pod is missing or not ready.
	NodeRelayNotReady NodeProblem = "RelayNotReady"
	// NodeAddressNotPublic: no public address is known, so the node's
	// InternalIP is published (source InternalIP).
	NodeAddressNotPublic NodeProblem = "AddressNotPublic"
)

// AttentionNode is a relay node that needs a person's attention.
type AttentionNode struct {
	// Name of the Node.
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Problems of this node.
	// +kubebuilder:validation:MaxItems=2
	Problems []NodeProblem `json:"problems"`
	// Addresses published for this node, at most one per IP family.
	// +kubebuilder:validation:MaxItems=2
	// +optional
	Addresses []string `json:"addresses,omitempty"`
	// Source says where the addresses came from.
	// +optional
	Source AddressSource `json:"source,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ts,categories=turnpike
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.nodeSummary`,description="relay nodes ready/desired"
// +kubebuilder:printcolumn:name="Attention",type=integer,JSONPath=`.status.nodesNeedingAttention`,description="nodes whose relay is not ready or that have no public address; status.attentionNodes names them"
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.status.addressSummary`,description="addresses apps are given"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// TurnServer runs a TURN relay on every selected node's host network.
type TurnServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TurnServerSpec   `json:"spec"`
	Status TurnServerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// TurnServerList is a list of TurnServers.
type TurnServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TurnServer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TurnServer{}, &TurnServerList{})
}
