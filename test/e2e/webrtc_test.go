//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
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

func (w *world) newCall(ice []iceServer, roleICE ...[]iceServer) *call {
	callN.Lock()
	callN.n++
	id := fmt.Sprintf("call%d", callN.n)
	callN.Unlock()
	w.signal.newCall(id, ice, roleICE...)
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
	runUntilCleanup(t, ns.Command(context.Background(), bin, args...), name, 5*time.Second, 30)
}
