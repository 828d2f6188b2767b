//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/test/netlab"
)

// testChromium: scenario 2. Headless Chromium in each client namespace
// opens the lab's page (page.html), which runs an RTCPeerConnection with
// iceTransportPolicy "relay" on the static credential's iceServers.json and
// exchanges data-channel messages with the other page. The selected pair
// must be relay to relay, through a relay's public address. The pages
// report to the signalling server, so no browser driver is needed.
//
// Two calls, under the default peer policy: both browsers on node-a's
// relay (each one's peer is the other's allocation on the same relay), and
// one browser on each node. The eBPF fast path (on by default) relays both
// in the kernel: the same-relay call on node-a (the program hands one
// allocation's ChannelData straight to the other's client), the other on
// both relays.
func testChromium(t *testing.T, w *world) {
	chromium := chromiumBinary(t)
	ice := w.staticICE(t)
	onA, onB := iceFor(ice, nodeAPublic), iceFor(ice, nodeBPublic)
	for _, tc := range []struct {
		name                string
		offerICE, answerICE []iceServer
		offerAt, answerAt   string
		// inKernel are the nodes whose fast path must relay the call, in
		// both directions.
		inKernel []string
	}{
		{"same relay", onA, onA, nodeAPublic, nodeAPublic, []string{nodeA}},
		{"two relays", onA, onB, nodeAPublic, nodeBPublic, []string{nodeA, nodeB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := kernelPackets(t, w)
			c := w.newCall(ice, tc.offerICE, tc.answerICE)
			startChromium(t, w.lab.client2, chromium, c.id, "answer")
			startChromium(t, w.lab.client1, chromium, c.id, "offer")
			offer, answer := c.wait(t, 2*time.Minute)
			checkRelayed(t, tc.name, offer, answer, nodeAPublic, nodeBPublic)
			if offer.Local.Address != tc.offerAt || answer.Local.Address != tc.answerAt {
				t.Errorf("offerer relays through %s, answerer through %s; want %s and %s",
					offer.Local.Address, answer.Local.Address, tc.offerAt, tc.answerAt)
			}
			t.Logf("chromium call: %d echoes through %s:%d -> %s:%d", offer.Received, offer.Local.Address, offer.Local.Port, offer.Remote.Address, offer.Remote.Port)
			waitKernelPackets(t, w, before, tc.inKernel...)
		})
	}
}

// iceFor keeps the URLs of ice that name host.
func iceFor(ice []iceServer, host string) []iceServer {
	var out []iceServer
	for _, s := range ice {
		var urls []string
		for _, u := range s.URLs {
			if strings.Contains(u, ":"+host+":") || strings.HasSuffix(u, ":"+host) {
				urls = append(urls, u)
			}
		}
		if len(urls) > 0 {
			s.URLs = urls
			out = append(out, s)
		}
	}
	return out
}

func chromiumBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	netlab.Require(t, "chromium (Debian: chromium)", false)
	return ""
}

// startChromium runs a headless Chromium with a fresh profile inside ns on
// the lab page, until the test ends.
func startChromium(t *testing.T, ns *netlab.Namespace, chromium, call, role string) {
	t.Helper()
	profile := t.TempDir()
	url := fmt.Sprintf("%s/page?call=%s&role=%s", signalURL, call, role)
	startProcess(t, ns, "chromium-"+role, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+profile,
		"--crash-dumps-dir="+filepath.Join(profile, "crashes"), url)
}
