//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
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
func testChromium(t *testing.T, w *world) {
	chromium := chromiumBinary(t)
	c := w.newCall(w.staticICE(t))
	startChromium(t, w.lab.client2, chromium, c.id, "answer")
	startChromium(t, w.lab.client1, chromium, c.id, "offer")
	offer, answer := c.wait(t, 2*time.Minute)
	addr := checkRelayed(t, "chromium", offer, answer, nodeAPublic, nodeBPublic)
	t.Logf("chromium call: %d echoes through %s:%d -> %s:%d", offer.Received, addr, offer.Local.Port, offer.Remote.Address, offer.Remote.Port)
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
