//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay/restauth"
	"github.com/turnpike-dev/turnpike/test/netlab"
	"github.com/turnpike-dev/turnpike/test/testenv"
)

// buildPeer builds the pion/webrtc peer (webrtcpeer/).
func buildPeer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "webrtcpeer")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-tags", "e2e", "-o", bin, "./test/e2e/webrtcpeer")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build webrtcpeer: %v\n%s", err, out)
	}
	return bin
}

// staticICE is the static credential's iceServers.json, as an app reads it.
func (w *world) staticICE(t *testing.T) []iceServer { return w.iceServers(t, staticCred) }

// restICE is what an app server hands a browser for the shared-secret
// credential: the Secret's URLs with a username and password it mints.
func (w *world) restICE(t *testing.T, user string) []iceServer {
	ice := w.iceServers(t, restCred)
	username, password := restauth.Mint(w.secret(t, restCred, "sharedSecret"), user, time.Now(), time.Hour)
	for i := range ice {
		ice[i].Username, ice[i].Credential = username, password
	}
	return ice
}

// call is one WebRTC call between a peer in client1 (offer) and one in
// client2 (answer).
type call struct {
	id            string
	offer, answer chan peerResult
}

var callN struct {
	sync.Mutex
	n int
}

// startPionCall starts the two pion peers; pings 0 holds the call until
// stopCall.
func (w *world) startPionCall(t *testing.T, ice []iceServer, pings int) *call {
	t.Helper()
	c := w.newCall(ice)
	args := []string{"-signal", signalURL, "-call", c.id, "-pings", strconv.Itoa(pings), "-timeout", "6m"}
	startProcess(t, w.lab.client2, "answer-"+c.id, w.peerBin, append(args, "-role", "answer")...)
	startProcess(t, w.lab.client1, "offer-"+c.id, w.peerBin, append(args, "-role", "offer")...)
	return c
}

func (w *world) newCall(ice []iceServer) *call {
	callN.Lock()
	callN.n++
	id := fmt.Sprintf("call%d", callN.n)
	callN.Unlock()
	w.signal.newCall(id, ice)
	return &call{id: id, offer: w.signal.result(id, "offer"), answer: w.signal.result(id, "answer")}
}

// wait returns the offerer's and the answerer's results.
func (c *call) wait(t *testing.T, timeout time.Duration) (offer, answer peerResult) {
	t.Helper()
	deadline := time.After(timeout)
	for _, r := range []struct {
		ch  chan peerResult
		out *peerResult
	}{{c.answer, &answer}, {c.offer, &offer}} {
		select {
		case *r.out = <-r.ch:
		case <-deadline:
			t.Fatalf("%s: no result after %s", c.id, timeout)
		}
	}
	return offer, answer
}

// checkRelayed requires a working call whose selected pair is relay to
// relay, the local candidate on one of the relays' public addresses
// (allowed), and returns that address.
func checkRelayed(t *testing.T, name string, offer, answer peerResult, allowed ...string) string {
	t.Helper()
	for _, r := range []peerResult{offer, answer} {
		if r.Error != "" {
			t.Fatalf("%s: %s: %s", name, r.Role, r.Error)
		}
		if r.Local.Type != "relay" || r.Remote.Type != "relay" {
			t.Errorf("%s: %s selected %s -> %s, want relay -> relay", name, r.Role, r.Local.Type, r.Remote.Type)
		}
		if !slices.Contains(allowed, r.Local.Address) {
			t.Errorf("%s: %s relays through %s, want one of %v", name, r.Role, r.Local.Address, allowed)
		}
	}
	if offer.Received == 0 {
		t.Errorf("%s: no messages came back", name)
	}
	return offer.Local.Address
}

// testPion: scenario 3, pion/webrtc. Two pion peers behind the two NATs
// connect with relay candidates only and exchange data-channel messages,
// once with the static credential, once with minted shared-secret ones.
func testPion(t *testing.T, w *world) {
	both := []string{nodeAPublic, nodeBPublic}
	t.Run("static", func(t *testing.T) {
		offer, answer := w.startPionCall(t, w.staticICE(t), 10).wait(t, 2*time.Minute)
		checkRelayed(t, "static", offer, answer, both...)
	})
	t.Run("shared-secret", func(t *testing.T) {
		offer, answer := w.startPionCall(t, w.restICE(t, "pion"), 10).wait(t, 2*time.Minute)
		checkRelayed(t, "shared secret", offer, answer, both...)
	})
}

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

// requireTool finds a program from a Debian package; missing, the test
// skips on a developer machine and fails in CI.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	netlab.Require(t, name+" (Debian: "+pkg+")", err == nil)
	return path
}

// startProcess runs a program inside ns until the test ends, in its own
// process group (killed at the end); its output is logged if the test fails.
func startProcess(t *testing.T, ns *netlab.Namespace, name, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stopGroup(cmd, exited, 5*time.Second)
		logFile.Close()
		if t.Failed() {
			logTail(t, logPath, 30)
		}
	})
}
