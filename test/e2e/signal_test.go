//go:build e2e

package e2e

import (
	_ "embed"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// signalServer is the lab's signalling server, on signalAddr:8080 inside
// the inet namespace, so peers in both client namespaces reach it through
// their NATs. webrtcpeer/main.go documents the protocol; the Chromium page
// (page.html) speaks the same one.
type signalServer struct {
	mu      sync.Mutex
	ice     map[string][]iceServer
	sdp     map[string][]byte // call/role -> description
	stop    map[string]bool
	results map[string]chan peerResult // call/role
}

const signalURL = "http://" + signalAddr + ":8080"

//go:embed page.html
var pageHTML string

// peerResult is what a peer reports (webrtcpeer's result).
type peerResult struct {
	Role     string        `json:"role"`
	Error    string        `json:"error,omitempty"`
	Received int           `json:"received"`
	MaxGapMS int64         `json:"maxGapMs"`
	Local    peerCandidate `json:"local"`
	Remote   peerCandidate `json:"remote"`
}

type peerCandidate struct {
	Type    string `json:"type"`
	Address string `json:"address"`
	Port    int    `json:"port"`
}

func startSignalServer(t *testing.T, l *lab) *signalServer {
	s := &signalServer{ice: map[string][]iceServer{}, sdp: map[string][]byte{}, stop: map[string]bool{}, results: map[string]chan peerResult{}}
	var ln net.Listener
	err := l.inet.Do(func() (err error) {
		ln, err = net.Listen("tcp4", signalAddr+":8080")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// newCall registers a call's iceServers and returns the channel its
// results arrive on. roleICE, when given, are the offerer's and the
// answerer's own iceServers instead.
func (s *signalServer) newCall(call string, ice []iceServer, roleICE ...[]iceServer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ice[call] = ice
	if len(roleICE) == 2 {
		s.ice[call+"/offer"], s.ice[call+"/answer"] = roleICE[0], roleICE[1]
	}
	for _, role := range []string{"offer", "answer"} {
		s.results[call+"/"+role] = make(chan peerResult, 4)
	}
}

func (s *signalServer) stopCall(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop[call] = true
}

func (s *signalServer) result(call, role string) chan peerResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.results[call+"/"+role]
}

func (s *signalServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case parts[0] == "page":
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, pageHTML)
	case parts[0] == "ice" && (len(parts) == 2 || len(parts) == 3):
		ice, ok := s.ice[strings.Join(parts[1:], "/")]
		if !ok {
			ice, ok = s.ice[parts[1]]
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(ice)
	case parts[0] == "sdp" && len(parts) == 3 && r.Method == http.MethodPost:
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		s.sdp[parts[1]+"/"+parts[2]] = body
	case parts[0] == "sdp" && len(parts) == 3:
		body, ok := s.sdp[parts[1]+"/"+parts[2]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	case parts[0] == "stop" && len(parts) == 2:
		if !s.stop[parts[1]] {
			w.WriteHeader(http.StatusNoContent)
		}
	case parts[0] == "result" && len(parts) == 3:
		var res peerResult
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&res); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case s.results[parts[1]+"/"+parts[2]] <- res:
		default:
		}
	default:
		http.NotFound(w, r)
	}
}
