// Package netlab builds small network labs for tests: Linux network
// namespaces joined by veth pairs, with addresses, routes and iptables NAT,
// all removed when the test ends. It needs root and the ip and iptables
// commands (Debian's iproute2 and iptables); without them a test skips, or
// fails when the environment variable CI is set.
//
// It also has a minimal STUN server (STUNServer), which needs no root.
//
// Every lab uses only addresses the test chooses inside namespaces it
// created; nothing is routed to the host's own network.
package netlab
