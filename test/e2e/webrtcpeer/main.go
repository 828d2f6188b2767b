//go:build e2e

// Command webrtcpeer is one pion/webrtc peer of the e2e lab. The lab runs
// two of them, each inside a NATed client namespace (a separate process,
// because pion opens sockets from its own goroutines, which a namespace
// entered by one thread would not cover). They find each other through the
// lab's signalling server (test/e2e/signal_test.go), connect with relay
// candidates only, and exchange data-channel messages:
//
//	GET  /ice/{call}           iceServers for this call
//	POST /sdp/{call}/{role}    our description, after gathering completes (no trickle)
//	GET  /sdp/{call}/{role}    the other side's, 404 until it is there
//	GET  /stop/{call}          200 once the test wants a held call to end
//	POST /result/{call}/{role} what happened (see result)
//
// The offerer sends "ping" every 100 ms and the answerer echoes it; the
// offerer measures the longest gap between echoes, which is how the
// rotation scenario shows that a running call was not interrupted.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// result is what a peer reports; the page for Chromium reports the same.
type result struct {
	Role     string    `json:"role"`
	Error    string    `json:"error,omitempty"`
	Received int       `json:"received"`
	MaxGapMS int64     `json:"maxGapMs"`
	Local    candidate `json:"local"`
	Remote   candidate `json:"remote"`
}

type candidate struct {
	Type    string `json:"type"`
	Address string `json:"address"`
	Port    int    `json:"port"`
}

type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

var (
	signal  = flag.String("signal", "", "signalling server URL")
	call    = flag.String("call", "", "call id")
	role    = flag.String("role", "", "offer or answer")
	pings   = flag.Int("pings", 10, "echoes the offerer waits for; 0: until /stop")
	timeout = flag.Duration("timeout", 90*time.Second, "give up after this long")
)

func main() {
	flag.Parse()
	res := result{Role: *role}
	if err := run(&res); err != nil {
		res.Error = err.Error()
	}
	if err := post(fmt.Sprintf("/result/%s/%s", *call, *role), res); err != nil {
		fmt.Fprintln(os.Stderr, "posting the result:", err)
	}
	if res.Error != "" {
		fmt.Fprintln(os.Stderr, res.Error)
		os.Exit(1)
	}
}

func run(res *result) error {
	var servers []iceServer
	if err := get("/ice/"+*call, &servers); err != nil {
		return err
	}
	cfg := webrtc.Configuration{ICETransportPolicy: webrtc.ICETransportPolicyRelay}
	for _, s := range servers {
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	pc, err := webrtc.NewPeerConnection(cfg)
	if err != nil {
		return err
	}
	defer pc.Close()
	deadline := time.After(*timeout)
	if *role == "offer" {
		return offer(pc, res, deadline)
	}
	return answer(pc, res, deadline)
}

// offer opens the data channel, pings and measures the echoes.
func offer(pc *webrtc.PeerConnection, res *result, deadline <-chan time.Time) error {
	dc, err := pc.CreateDataChannel("e2e", nil)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var last time.Time
	done := make(chan struct{})
	dc.OnOpen(func() {
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if dc.SendText("ping") != nil {
					return
				}
			}
		}()
	})
	echoes := make(chan struct{}, 1000)
	dc.OnMessage(func(webrtc.DataChannelMessage) {
		mu.Lock()
		now := time.Now()
		if !last.IsZero() && now.Sub(last).Milliseconds() > res.MaxGapMS {
			res.MaxGapMS = now.Sub(last).Milliseconds()
		}
		last = now
		res.Received++
		mu.Unlock()
		select {
		case echoes <- struct{}{}:
		default:
		}
	})
	defer close(done)
	if err := exchangeDescriptions(pc, true); err != nil {
		return err
	}
	stop := time.NewTicker(500 * time.Millisecond)
	defer stop.Stop()
	for {
		select {
		case <-deadline:
			return fmt.Errorf("timed out with %d echoes, ICE state %s", res.Received, pc.ICEConnectionState())
		case <-echoes:
			mu.Lock()
			n := res.Received
			mu.Unlock()
			if *pings > 0 && n >= *pings {
				return selectedPair(pc, res)
			}
		case <-stop.C:
			if *pings == 0 && stopped() {
				mu.Lock()
				// A call whose echoes stopped has a gap up to now.
				if gap := time.Since(last).Milliseconds(); gap > res.MaxGapMS {
					res.MaxGapMS = gap
				}
				mu.Unlock()
				return selectedPair(pc, res)
			}
		}
	}
}

// answer echoes every message and reports after the first one; it keeps
// echoing until the offerer's call ends (/stop or the deadline).
func answer(pc *webrtc.PeerConnection, res *result, deadline <-chan time.Time) error {
	first := make(chan struct{})
	var once sync.Once
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			_ = dc.SendText("pong")
			once.Do(func() { close(first) })
		})
	})
	if err := exchangeDescriptions(pc, false); err != nil {
		return err
	}
	select {
	case <-first:
	case <-deadline:
		return fmt.Errorf("no message arrived, ICE state %s", pc.ICEConnectionState())
	}
	res.Received = 1
	if err := selectedPair(pc, res); err != nil {
		return err
	}
	if err := post(fmt.Sprintf("/result/%s/%s", *call, *role), res); err != nil {
		return err
	}
	for !stopped() {
		select {
		case <-deadline:
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// exchangeDescriptions does the offer/answer through the signalling
// server, with complete gathering instead of trickle ICE.
func exchangeDescriptions(pc *webrtc.PeerConnection, offerer bool) error {
	if !offerer {
		var remote webrtc.SessionDescription
		if err := poll("/sdp/"+*call+"/offer", &remote); err != nil {
			return err
		}
		if err := pc.SetRemoteDescription(remote); err != nil {
			return err
		}
	}
	var local webrtc.SessionDescription
	var err error
	if offerer {
		local, err = pc.CreateOffer(nil)
	} else {
		local, err = pc.CreateAnswer(nil)
	}
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(local); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("ICE gathering did not complete")
	}
	if err := post("/sdp/"+*call+"/"+*role, pc.LocalDescription()); err != nil {
		return err
	}
	if offerer {
		var remote webrtc.SessionDescription
		if err := poll("/sdp/"+*call+"/answer", &remote); err != nil {
			return err
		}
		return pc.SetRemoteDescription(remote)
	}
	return nil
}

func selectedPair(pc *webrtc.PeerConnection, res *result) error {
	pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return fmt.Errorf("no selected candidate pair (%v)", err)
	}
	res.Local = candidate{Type: pair.Local.Typ.String(), Address: pair.Local.Address, Port: int(pair.Local.Port)}
	res.Remote = candidate{Type: pair.Remote.Typ.String(), Address: pair.Remote.Address, Port: int(pair.Remote.Port)}
	return nil
}

func stopped() bool {
	r, err := http.Get(*signal + "/stop/" + *call)
	if err != nil {
		return false
	}
	r.Body.Close()
	return r.StatusCode == http.StatusOK
}

// poll GETs path until it exists (the other peer has posted it).
func poll(path string, v any) error {
	for range 600 { // 60 s
		if err := get(path, v); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s never appeared", path)
}

func get(path string, v any) error {
	r, err := http.Get(*signal + path)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, r.Status)
	}
	return json.NewDecoder(r.Body).Decode(v)
}

func post(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r, err := http.Post(*signal+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", path, r.Status)
	}
	return nil
}
