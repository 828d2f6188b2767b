package probe

import (
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		in   string
		want Server
		err  bool
	}{
		{in: "turn:198.51.100.7", want: Server{Host: "198.51.100.7", Port: 3478, Transport: "udp"}},
		{in: "turn:turn.example.com:3479?transport=tcp", want: Server{Host: "turn.example.com", Port: 3479, Transport: "tcp"}},
		{in: "turn:198.51.100.7:3478?transport=UDP", want: Server{Host: "198.51.100.7", Port: 3478, Transport: "udp"}},
		{in: "turns:turn.example.com", want: Server{Secure: true, Host: "turn.example.com", Port: 5349, Transport: "tcp"}},
		{in: "turns:turn.example.com:443?transport=udp", want: Server{Secure: true, Host: "turn.example.com", Port: 443, Transport: "udp"}},
		{in: "turn:[2001:db8::1]:3478", want: Server{Host: "2001:db8::1", Port: 3478, Transport: "udp"}},
		{in: "turn:2001:db8::1", want: Server{Host: "2001:db8::1", Port: 3478, Transport: "udp"}},
		{in: "stun:198.51.100.7", err: true},
		{in: "turn://198.51.100.7:3478", err: true},
		{in: "turn:198.51.100.7:99999", err: true},
		{in: "turn:198.51.100.7?transport=sctp", err: true},
		{in: "turn:", err: true},
		{in: "198.51.100.7:3478", err: true},
	}
	for _, c := range cases {
		got, err := ParseURL(c.in)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v, error %v", c.in, got, err, c.want, c.err)
		}
	}
	// String gives back a URL that parses to the same server.
	s := Server{Host: "2001:db8::1", Port: 5349, Transport: "tcp", Secure: true}
	if again, err := ParseURL(s.String()); err != nil || again != s {
		t.Errorf("ParseURL(%q) = %+v, %v", s.String(), again, err)
	}
}

func TestResultStatistics(t *testing.T) {
	r := &Result{Sent: 5, RTTs: []time.Duration{4, 1, 3, 2}}
	if r.MedianRTT() != 2 { // (2+3)/2 rounds down
		t.Errorf("median = %v", r.MedianRTT())
	}
	if r.Loss() != 0.2 {
		t.Errorf("loss = %v", r.Loss())
	}
	r.RTTs = r.RTTs[:3]
	if r.MedianRTT() != 3 {
		t.Errorf("median of 4,1,3 = %v", r.MedianRTT())
	}
}
