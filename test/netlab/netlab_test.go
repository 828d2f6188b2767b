package netlab

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMasquerade builds inside ── router ── outside, masquerades on the
// router and checks that a datagram from inside reaches outside from the
// router's outer address, and that the lab is gone afterwards.
func TestMasquerade(t *testing.T) {
	var names []string
	t.Run("lab", func(t *testing.T) {
		lab := New(t)
		inside, router, outside := lab.Namespace("in"), lab.Namespace("nat"), lab.Namespace("out")
		lab.Link(inside, "10.77.1.2/24", router, "10.77.1.1/24")
		_, routerOut := lab.Link(outside, "198.18.0.2/24", router, "198.18.0.1/24")
		inside.DefaultRoute("10.77.1.1")
		router.EnableForwarding()
		router.Masquerade(routerOut)
		names = []string{inside.Name, router.Name, outside.Name}
		for _, n := range names {
			if len(n) > maxName {
				t.Errorf("namespace name %q is longer than %d", n, maxName)
			}
		}

		server := outside.ListenPacket("udp4", "198.18.0.2:0")
		client := inside.ListenPacket("udp4", "10.77.1.2:0")
		if _, err := client.WriteTo([]byte("hello"), server.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = server.SetReadDeadline(time.Now().Add(10 * time.Second)) // failure bound only
		buf := make([]byte, 64)
		n, from, err := server.ReadFrom(buf)
		if err != nil {
			t.Fatalf("nothing arrived outside: %v", err)
		}
		src := from.(*net.UDPAddr).AddrPort().Addr()
		if string(buf[:n]) != "hello" || src != netip.MustParseAddr("198.18.0.1") {
			t.Fatalf("got %q from %s, want \"hello\" from the router's 198.18.0.1", buf[:n], src)
		}
		// The host's namespace has none of the lab's addresses.
		if out, _ := exec.Command("ip", "-br", "addr").CombinedOutput(); strings.Contains(string(out), "198.18.0.") {
			t.Errorf("a lab address leaked into the host namespace:\n%s", out)
		}
		// Commands run inside see the namespace's interfaces.
		if out := inside.Exec("ip", "-br", "addr"); !strings.Contains(out, "10.77.1.2/24") {
			t.Errorf("ip addr inside %s:\n%s", inside.Name, out)
		}
	})
	if names == nil {
		return // skipped
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind:\n%s", n, out)
		}
	}
}
