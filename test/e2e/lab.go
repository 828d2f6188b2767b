//go:build e2e

package e2e

import (
	"strings"
	"testing"

	"github.com/turnpike-dev/turnpike/test/netlab"
)

// The lab's network. 198.18.0.0/15 (RFC 2544, benchmarking) plays the
// internet; 10.x are private networks behind NATs. Nothing is routed to the
// host's own network.
//
//	             inet (router; signalling server on 198.18.0.1)
//	  ┌──────────────┬──────────┴──────────┬────────────────────┐
//	198.18.1.2     198.18.2.2            198.18.3.2            198.18.4.2
//	node-a         nat-b (1:1 NAT)       nat-c1 (MASQUERADE)   nat-c2 (MASQUERADE --random-fully)
//	 │ 10.10.0.2     │ 10.20.0.1           │ 10.30.0.1           │ 10.40.0.1
//	lan-a           node-b 10.20.0.2     client1 10.30.0.2     client2 10.40.0.2
//	 10.10.0.1
//	 169.254.169.254 (a "metadata service")
//
// node-a has its public address on its own interface and a second, internal
// interface (the cluster's network, with a metadata address on it): the
// peers a relay must never reach. node-b has only a private address; its
// NAT forwards everything for 198.18.2.2 to it (a cloud VM's public IP).
// client1 sits behind an endpoint-independent mapping NAT (Linux keeps the
// source port), client2 behind a symmetric one (a random port per flow), so
// only relayed candidates can connect the two.
const (
	nodeA       = "node-a"
	nodeAPublic = "198.18.1.2"
	lanA        = "10.10.0.1" // a host on node-a's internal network
	metadataIP  = "169.254.169.254"

	nodeB         = "node-b"
	nodeBInternal = "10.20.0.2"
	nodeBPublic   = "198.18.2.2"

	client1Addr   = "10.30.0.2"
	client1Public = "198.18.3.2"
	client2Addr   = "10.40.0.2"
	client2Public = "198.18.4.2"

	signalAddr = "198.18.0.1" // the signalling/test HTTP server, in inet

	// labInternet holds every "public" address of the lab.
	labInternet = "198.18.0.0/15"
)

// lab is the built network.
type lab struct {
	inet, nodeA, lanA, nodeB, natB, client1, nat1, client2, nat2 *netlab.Namespace
}

// labNode is one relay node of the lab.
type labNode struct {
	name     string
	ns       *netlab.Namespace
	hostIP   string // InternalIP: HOST_IP, where the relay binds
	publicIP string
}

func (l *lab) nodes() []labNode {
	return []labNode{
		{name: nodeA, ns: l.nodeA, hostIP: nodeAPublic, publicIP: nodeAPublic},
		{name: nodeB, ns: l.nodeB, hostIP: nodeBInternal, publicIP: nodeBPublic},
	}
}

func buildLab(t *testing.T) *lab {
	t.Helper()
	nl := netlab.New(t)
	l := &lab{
		inet: nl.Namespace("inet"), nodeA: nl.Namespace("nodea"), lanA: nl.Namespace("lana"),
		nodeB: nl.Namespace("nodeb"), natB: nl.Namespace("natb"),
		client1: nl.Namespace("cli1"), nat1: nl.Namespace("nat1"),
		client2: nl.Namespace("cli2"), nat2: nl.Namespace("nat2"),
	}
	l.inet.EnableForwarding()
	l.inet.AddAddress("lo", signalAddr+"/32")

	// node-a: public on its own interface, internal network behind it.
	nl.Link(l.inet, "198.18.1.1/24", l.nodeA, nodeAPublic+"/24")
	l.nodeA.DefaultRoute("198.18.1.1")
	// Nodes forward, as every Kubernetes node does (the fast path's
	// kernel route lookup asks for it); inet knows no route to the
	// internal network, so nothing reaches lan-a through node-a.
	l.nodeA.EnableForwarding()
	nl.Link(l.nodeA, "10.10.0.2/24", l.lanA, lanA+"/24")
	l.lanA.AddAddress("lo", metadataIP+"/32")
	l.lanA.DefaultRoute("10.10.0.2")
	l.nodeA.Exec("ip", "route", "add", metadataIP+"/32", "via", lanA)

	// node-b behind a 1:1 NAT.
	natBOut, _ := nl.Link(l.natB, nodeBPublic+"/24", l.inet, "198.18.2.1/24")
	_, natBIn := nl.Link(l.nodeB, nodeBInternal+"/24", l.natB, "10.20.0.1/24")
	l.nodeB.DefaultRoute("10.20.0.1")
	l.nodeB.EnableForwarding()
	l.natB.DefaultRoute("198.18.2.1")
	l.natB.EnableForwarding()
	l.natB.Masquerade(natBOut)
	l.natB.DNAT(natBOut, nodeBPublic, nodeBInternal)
	// Hairpin, as cloud NATs do: node-b reaching its own public address
	// comes back to it from that public address. Two clients relaying
	// through node-b's relay need it (each one's peer is the other's
	// relayed address, 198.18.2.2:port).
	l.natB.DNAT(natBIn, nodeBPublic, nodeBInternal)
	l.natB.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", natBIn, "-s", nodeBInternal, "-d", nodeBInternal,
		"-j", "SNAT", "--to-source", nodeBPublic)

	// client1 behind an endpoint-independent mapping NAT.
	nat1Out, _ := nl.Link(l.nat1, client1Public+"/24", l.inet, "198.18.3.1/24")
	nl.Link(l.client1, client1Addr+"/24", l.nat1, "10.30.0.1/24")
	l.client1.DefaultRoute("10.30.0.1")
	l.nat1.DefaultRoute("198.18.3.1")
	l.nat1.EnableForwarding()
	l.nat1.Masquerade(nat1Out)

	// client2 behind a symmetric NAT: a random source port for every flow.
	nat2Out, _ := nl.Link(l.nat2, client2Public+"/24", l.inet, "198.18.4.1/24")
	nl.Link(l.client2, client2Addr+"/24", l.nat2, "10.40.0.1/24")
	l.client2.DefaultRoute("10.40.0.1")
	l.nat2.DefaultRoute("198.18.4.1")
	l.nat2.EnableForwarding()
	l.nat2.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", nat2Out, "-j", "MASQUERADE", "--random-fully")

	for _, ns := range []*netlab.Namespace{l.inet, l.nodeA, l.lanA, l.nodeB, l.natB, l.client1, l.nat1, l.client2, l.nat2} {
		completeChecksums(ns)
	}
	return l
}

// completeChecksums turns off transmit checksum offload on the namespace's
// veths. A real network hands a node datagrams with complete UDP checksums;
// a veth passes a local sender's unfinished one (CHECKSUM_PARTIAL) along
// every hop, through the NATs too, and the eBPF fast path leaves such
// datagrams to userspace. Without this no channel of the lab would be
// relayed in the kernel.
func completeChecksums(ns *netlab.Namespace) {
	for _, line := range strings.Split(ns.Exec("ip", "-o", "link", "show"), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(fields[1], ":"), "@")
		if name != "lo" {
			ns.Exec("ethtool", "-K", name, "tx", "off")
		}
	}
}
