package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// maxName is Linux's limit for interface names (IFNAMSIZ-1); namespace
// names are kept as short so they read the same in `ip` output.
const maxName = 15

// cmdTimeout bounds every ip/iptables command, so a wedged command fails
// the test instead of hanging it.
const cmdTimeout = 30 * time.Second

// Lab is a set of namespaces and links owned by one test. Everything it
// creates is deleted by t.Cleanup, also when the test fails.
type Lab struct {
	t     testing.TB
	id    string // random, part of every namespace name
	nsN   int
	linkN int
}

// New starts a lab, or skips the test (fails it when CI is set) when it
// cannot run here: not root, ip or iptables missing, or namespaces not
// permitted (an unprivileged container).
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t, "root (netlab creates network namespaces)", os.Geteuid() == 0)
	for _, tool := range []string{"ip", "iptables"} {
		_, err := exec.LookPath(tool)
		Require(t, tool+" (Debian: iproute2, iptables)", err == nil)
	}
	b := make([]byte, 3) // concurrent test runs on one machine must not collide
	_, _ = rand.Read(b)
	l := &Lab{t: t, id: hex.EncodeToString(b)}
	return l
}

// Require skips the test when ok is false, or fails it when the environment
// variable CI is set: CI provides everything, so there a skip would hide a
// failure.
func Require(t testing.TB, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing (CI must provide it)", what)
	}
	t.Skipf("%s is missing; skipping (this would fail in CI)", what)
}

// Namespace is one network namespace of a lab, with only loopback up.
type Namespace struct {
	lab *Lab
	// Name is the namespace's name, e.g. "tp3fa9c21-node" (for ip netns exec).
	Name string
	role string
}

// Namespace creates a namespace; role ("node", "nat", "pub") makes its name
// readable and names the interfaces other namespaces link to it.
func (l *Lab) Namespace(role string) *Namespace {
	l.t.Helper()
	l.nsN++
	ns := &Namespace{lab: l, role: role, Name: truncate(fmt.Sprintf("tp%s%d-%s", l.id, l.nsN, role))}
	if out, err := run("ip", "netns", "add", ns.Name); err != nil {
		// The first namespace tells whether this machine allows them.
		Require(l.t, fmt.Sprintf("permission to create network namespaces (%v: %s)", err, out), l.nsN > 1)
		l.t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	l.t.Cleanup(func() {
		// Deleting the namespace removes its interfaces (and so the veth
		// peers elsewhere), routes and iptables rules with it.
		if out, err := run("ip", "netns", "del", ns.Name); err != nil {
			l.t.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.Exec("ip", "link", "set", "lo", "up")
	return ns
}

// Link joins a and b with a veth pair and gives each end an address with
// its prefix length, e.g. "10.77.1.2/24". It returns the interface names
// in a and in b. Both ends are created directly inside their namespaces, so
// nothing, not even briefly, appears in the host's namespace.
func (l *Lab) Link(a *Namespace, aAddr string, b *Namespace, bAddr string) (aIf, bIf string) {
	l.t.Helper()
	l.linkN++
	aIf = truncate(fmt.Sprintf("v%d-%s", l.linkN, b.role))
	bIf = truncate(fmt.Sprintf("v%d-%s", l.linkN, a.role))
	if aIf == bIf {
		bIf = truncate(fmt.Sprintf("v%db-%s", l.linkN, a.role))
	}
	if out, err := run("ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name); err != nil {
		l.t.Fatalf("veth %s/%s: %v: %s", aIf, bIf, err, out)
	}
	a.AddAddress(aIf, aAddr)
	b.AddAddress(bIf, bAddr)
	return aIf, bIf
}

// AddAddress adds an address with its prefix length, e.g. "10.77.1.2/24",
// to an interface of the namespace and sets the interface up.
func (n *Namespace) AddAddress(ifName, prefix string) {
	n.lab.t.Helper()
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		n.lab.t.Fatalf("address %q: %v", prefix, err)
	}
	args := []string{"ip", "addr", "add", p.String(), "dev", ifName}
	if p.Addr().Is6() {
		// No duplicate address detection: the address is usable at once
		// instead of after about a second of "tentative".
		args = append(args, "nodad")
	}
	n.Exec(args...)
	n.Exec("ip", "link", "set", ifName, "up")
}

// Exec runs a command inside the namespace and returns its output; it
// fails the test if the command fails.
func (n *Namespace) Exec(args ...string) string {
	n.lab.t.Helper()
	out, err := run(append([]string{"ip", "netns", "exec", n.Name}, args...)...)
	if err != nil {
		n.lab.t.Fatalf("in %s: %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Command prepares a command that runs inside the namespace (through
// ip netns exec), for long-running programs; the caller starts and stops it.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// DefaultRoute sends everything not on a link through gateway.
func (n *Namespace) DefaultRoute(gateway string) {
	n.lab.t.Helper()
	n.Exec("ip", "route", "add", "default", "via", gateway)
}

// EnableForwarding makes the namespace route between its links (IPv4 and
// IPv6), as a router does.
func (n *Namespace) EnableForwarding() {
	n.lab.t.Helper()
	err := n.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(f, []byte("1\n"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		n.lab.t.Fatalf("forwarding in %s: %v", n.Name, err)
	}
}

// Masquerade rewrites the source of IPv4 packets leaving through outIf to
// outIf's address (a home router, a cloud NAT gateway).
func (n *Namespace) Masquerade(outIf string) {
	n.lab.t.Helper()
	n.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", outIf, "-j", "MASQUERADE")
}

// SNAT rewrites the source of IPv4 packets leaving through outIf to addr.
func (n *Namespace) SNAT(outIf, addr string) {
	n.lab.t.Helper()
	n.Exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", outIf, "-j", "SNAT", "--to-source", addr)
}

// DNAT forwards new IPv4 connections and flows arriving on inIf for dst to
// the inner address to, all ports: with Masquerade on the way out this is
// a 1:1 NAT, as a cloud gives a VM with a public IP.
func (n *Namespace) DNAT(inIf, dst, to string) {
	n.lab.t.Helper()
	n.Exec("iptables", "-t", "nat", "-A", "PREROUTING", "-i", inIf, "-d", dst, "-j", "DNAT", "--to-destination", to)
}

// Do runs fn on an OS thread that has joined the namespace. Sockets fn
// creates belong to the namespace for good and may then be used from any
// goroutine, so a test can serve or dial inside a namespace in-process.
//
// fn must not start goroutines that create sockets: they may run on other
// threads. The thread is never unlocked, so Go ends it with the goroutine
// instead of reusing it outside the namespace (Go creates new threads from a
// clean template thread, not from a locked one, since Go 1.10).
func (n *Namespace) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- n.enterAndRun(fn)
	}()
	return <-errc
}

func (n *Namespace) enterAndRun(fn func() error) error {
	f, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", n.Name, err)
	}
	return fn()
}

// ListenPacket opens a packet socket inside the namespace (see Do).
func (n *Namespace) ListenPacket(network, addr string) net.PacketConn {
	n.lab.t.Helper()
	var conn net.PacketConn
	err := n.Do(func() (err error) {
		conn, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		n.lab.t.Fatalf("listen %s %s in %s: %v", network, addr, n.Name, err)
	}
	n.lab.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// DialContext dials from inside the namespace (see Do).
func (n *Namespace) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// HTTPClient is an HTTP client whose connections start inside the
// namespace, e.g. to read a health endpoint on the namespace's loopback.
func (n *Namespace) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true},
	}
}

// run runs a command in the host namespace (ip netns and ip link manage
// the lab from there) and returns its combined output.
func run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func truncate(name string) string {
	if len(name) > maxName {
		return name[:maxName]
	}
	return name
}
