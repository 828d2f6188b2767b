//go:build e2e

package e2e

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	uclientLost  = regexp.MustCompile(`Total lost packets (\d+) \(`)
	uclientTotal = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
)

// testUclient: scenario 3, coturn's turnutils_uclient from behind the
// symmetric NAT, to turnutils_peer on the internet, through each relay,
// with the static password (-w) and with the shared secret (-W).
func testUclient(t *testing.T, w *world) {
	uclient := requireTool(t, "turnutils_uclient", "coturn")
	peerBin := requireTool(t, "turnutils_peer", "coturn")
	const peerPort = 3480
	startProcess(t, w.lab.inet, "turnutils_peer", peerBin, "-L", signalAddr, "-p", strconv.Itoa(peerPort))
	auth := map[string][]string{
		"static":        {"-u", staticUser, "-w", w.secret(t, staticCred, "password")},
		"shared-secret": {"-u", "uclient", "-W", w.secret(t, restCred, "sharedSecret")},
	}
	for _, node := range w.lab.nodes() {
		for _, name := range []string{"static", "shared-secret"} {
			t.Run(node.name+"-"+name, func(t *testing.T) {
				const messages = 20
				// -c: no RTCP allocation (pion has no EVEN-PORT pairs); never
				// -g: pion answers DONT-FRAGMENT with 420 and uclient gives up.
				args := append([]string{"-c", "-n", strconv.Itoa(messages), "-m", "1", "-z", "5",
					"-p", strconv.Itoa(turnPort), "-e", signalAddr, "-r", strconv.Itoa(peerPort)}, auth[name]...)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				out, err := w.lab.client2.Command(ctx, uclient, append(args, node.publicIP)...).CombinedOutput()
				if err != nil {
					t.Fatalf("turnutils_uclient: %v\n%s", err, out)
				}
				checkUclient(t, string(out), messages)
			})
		}
	}
}

func checkUclient(t *testing.T, out string, messages int) {
	t.Helper()
	lost := uclientLost.FindStringSubmatch(out)
	var totals []string
	for _, line := range strings.Split(out, "\n") {
		if m := uclientTotal.FindStringSubmatch(line); m != nil {
			totals = m
		}
	}
	if lost == nil || totals == nil {
		t.Fatalf("cannot parse turnutils_uclient output:\n%s", out)
	}
	sent, _ := strconv.Atoi(totals[1])
	received, _ := strconv.Atoi(totals[2])
	if lost[1] != "0" || sent != messages || received != sent {
		t.Fatalf("lost %s, sent %d, received %d (want 0, %d, %d)\n%s", lost[1], sent, received, messages, messages, out)
	}
}
