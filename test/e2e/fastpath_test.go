//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// testFastPath: with the fast path's default mode (Auto) every relay pod
// runs the fastpath container as root; the relay runs as UID 65532 with no
// capability in effect while its fast path is active. Killing the agent in
// the middle of a call relayed in the kernel leaves the call going, in
// userspace, and the relay saying why; the restarted agent (restartPolicy
// Always) gets the relay's channels back.
func testFastPath(t *testing.T, w *world) {
	for _, n := range w.lab.nodes() {
		waitFastPath(t, n, true)
		r := w.agent.podOn(n.name)
		if r == nil || r.fastPath == nil {
			t.Fatalf("%s: no relay pod with a fastpath container", n.name)
		}
		uid, capEff := procStatus(t, r.cmd.Process.Pid)
		if uid != "65532" || capEff != "0000000000000000" {
			t.Errorf("%s: relay process Uid %s CapEff %s, want 65532 and none while the fast path is active", n.name, uid, capEff)
		}
		if _, capEff := procStatus(t, r.fastPath.cmd.Process.Pid); capEff == "0000000000000000" {
			t.Errorf("%s: the fastpath container holds no capability", n.name)
		}
	}

	// A call across the two relays; node-b's agent is killed in the middle
	// of it. (pion pads its ChannelData over UDP, which the program leaves
	// to userspace, so of this call's datagrams the kernel relays at most
	// what node-b's relay receives from node-a's; whether it did is logged,
	// not required: Chromium/two_relays is the call that must be in the
	// kernel.)
	ice := w.staticICE(t)
	held := w.newCall(ice, iceFor(ice, nodeAPublic), iceFor(ice, nodeBPublic))
	args := []string{"-signal", signalURL, "-call", held.id, "-pings", "0", "-timeout", "6m"}
	startProcess(t, w.lab.client2, "answer-"+held.id, w.peerBin, append(args, "-role", "answer")...)
	startProcess(t, w.lab.client1, "offer-"+held.id, w.peerBin, append(args, "-role", "offer")...)
	select {
	case r := <-held.answer:
		if r.Error != "" {
			t.Fatalf("held call: %s", r.Error)
		}
	case <-time.After(time.Minute):
		t.Fatal("the held call did not connect")
	}
	before := kernelPackets(t, w)
	time.Sleep(2 * time.Second)
	t.Logf("held call before the kill: fastpath_packets_total %v, when it connected %v", kernelPackets(t, w), before)

	n := w.lab.nodes()[1]
	r := w.agent.podOn(n.name)
	w.agent.mu.Lock()
	agentPid, restarts := r.fastPath.cmd.Process.Pid, r.fastPath.restarts
	w.agent.mu.Unlock()
	if err := syscall.Kill(-agentPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitLog(t, r.logPath, "fast path inactive, relaying in userspace")
	time.Sleep(3 * time.Second) // the call goes on, in userspace until the agent is back
	w.signal.stopCall(held.id)
	select {
	case res := <-held.offer:
		// 10 echoes a second: losing the agent must not pause the call.
		if res.Error != "" || res.MaxGapMS > 2000 {
			t.Errorf("held call through the agent's death: error %q, %d echoes, longest gap %d ms", res.Error, res.Received, res.MaxGapMS)
		}
		t.Logf("held call through the agent's death: %d echoes, longest gap %d ms", res.Received, res.MaxGapMS)
	case <-time.After(30 * time.Second):
		t.Fatal("the held call did not report")
	}
	// A new call while the agent restarts or is back.
	testPion(t, w)
	waitFastPath(t, n, true)
	w.agent.mu.Lock()
	defer w.agent.mu.Unlock()
	if r.fastPath.restarts == restarts {
		t.Errorf("%s: the fastpath container was not restarted", n.name)
	}
}

// kernelPackets are the datagrams each relay's fast path relayed in the
// kernel so far, per node and direction.
func kernelPackets(t *testing.T, w *world) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, n := range w.lab.nodes() {
		for _, dir := range []string{"client_to_peer", "peer_to_client"} {
			out[n.name+" "+dir] = relayMetric(t, n, `turnpike_relay_fastpath_packets_total{direction="`+dir+`"}`)
		}
	}
	return out
}

// waitKernelPackets waits until the fast path of each of nodes has relayed
// more than before, in both directions (the relay adds the kernel's
// counters to its metrics every second).
func waitKernelPackets(t *testing.T, w *world, before map[string]float64, nodes ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now, more := kernelPackets(t, w), true
		for _, n := range nodes {
			for _, dir := range []string{"client_to_peer", "peer_to_client"} {
				k := n + " " + dir
				more = more && now[k] > before[k]
			}
		}
		if more {
			t.Logf("relayed in the kernel: %v (before the call: %v)", now, before)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("turnpike_relay_fastpath_packets_total %v, before the call %v: want more on %v in both directions", now, before, nodes)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFastPath waits until the relay's /status says its fast path is
// active through the agent (or not).
func waitFastPath(t *testing.T, n labNode, active bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last *config.FastPathStatus
	for time.Now().Before(deadline) {
		res, err := n.ns.HTTPClient().Get(fmt.Sprintf("http://%s:%d/status", n.hostIP, healthPort))
		if err == nil {
			var st config.Status
			err = json.NewDecoder(res.Body).Decode(&st)
			res.Body.Close()
			last = st.FastPath
			if err == nil && last != nil && last.Agent && last.Active == active {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: /status fastPath %+v, want agent and active %v", n.name, last, active)
}

// procStatus is a process's real user and effective capabilities.
func procStatus(t *testing.T, pid int) (uid, capEff string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Uid":
			uid = strings.Fields(v)[0]
		case "CapEff":
			capEff = strings.TrimSpace(v)
		}
	}
	return uid, capEff
}

// waitLog waits for text in a log file.
func waitLog(t *testing.T, path, text string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if data, _ := os.ReadFile(path); strings.Contains(string(data), text) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%q not in %s", text, path)
}
