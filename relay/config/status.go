package config

import "time"

// The /status document: the JSON body of a relay's /status endpoint on its
// internal health port. It is part of the contract between relay and
// operator (the operator reads what STUN discovered from it), so it lives
// here beside relay.yaml and credentials.yaml.

// Status is the JSON body of /status.
type Status struct {
	Version               string   `json:"version"`
	ConfigGeneration      int64    `json:"configGeneration"`
	CredentialsGeneration int64    `json:"credentialsGeneration"`
	ExternalAddresses     []string `json:"externalAddresses"`
	ExternalAddressSource string   `json:"externalAddressSource"`
	Allocations           int      `json:"allocations"`
	Ready                 bool     `json:"ready"`
	Draining              bool     `json:"draining"`
	SocketHash            string   `json:"socketHash"`
	// STUN is the state of STUN discovery, while addresses.stun is set.
	STUN *STUNStatus `json:"stun,omitempty"`
	// FastPath is the state of the eBPF fast path, unless it is Disabled.
	FastPath *FastPathStatus `json:"fastPath,omitempty"`
	// BehaviorDiscovery is what NAT behaviour discovery answers from,
	// while stun.behaviorDiscovery is set.
	BehaviorDiscovery *BehaviorDiscoveryStatus `json:"behaviorDiscovery,omitempty"`
}

// BehaviorDiscoveryStatus is the "behaviorDiscovery" part of /status.
type BehaviorDiscoveryStatus struct {
	// Addresses has one entry per primary address (the first UDP
	// listener on a bind address); none when the relay binds all addresses.
	Addresses []BehaviorDiscoveryAddress `json:"addresses"`
}

// BehaviorDiscoveryAddress is one primary address and port and, when the
// node has an alternate address, the alternate address and port
// (OTHER-ADDRESS). Without Other, a CHANGE-REQUEST is answered 420.
type BehaviorDiscoveryAddress struct {
	Primary string `json:"primary"`
	Other   string `json:"other,omitempty"`
}

// FastPathStatus is the fast path's part of /status.
type FastPathStatus struct {
	Mode   string `json:"mode"`
	Active bool   `json:"active"`
	// Agent says the program belongs to the fast-path agent (fastPath.socket).
	Agent      bool     `json:"agent,omitempty"`
	Interfaces []string `json:"interfaces,omitempty"`
	// Reason says why the fast path is not active.
	Reason string `json:"reason,omitempty"`
	// Channels are the channels the relay keeps in the kernel's table,
	// with those whose write to the agent is still pending.
	Channels int `json:"channels"`
	// Pending are the writes queued for the agent or waiting for its
	// answer; until the agent has written a channel, its datagrams are
	// relayed in userspace.
	Pending int `json:"pending,omitempty"`
	// QueueFull counts the channels left in userspace because the queue of
	// writes to the agent was full.
	QueueFull int `json:"queueFull,omitempty"`
}

// STUNStatus is the "stun" part of /status, present while addresses.stun is set.
type STUNStatus struct {
	Servers []string `json:"servers"`
	// Discovered are the addresses found, at most one per family.
	Discovered []DiscoveredAddress `json:"discovered"`
	// LastError is why the last failed round failed; empty after a success.
	LastError string `json:"lastError,omitempty"`
}

// DiscoveredAddress is one discovered address and the server that said so.
type DiscoveredAddress struct {
	Address     string    `json:"address"`
	Server      string    `json:"server"`
	ConfirmedAt time.Time `json:"confirmedAt"`
}
