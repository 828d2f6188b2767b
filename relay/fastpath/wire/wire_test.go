package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
)

func testChannel() fastpath.Channel {
	return fastpath.Channel{
		Client:            netip.MustParseAddrPort("198.51.100.7:40000"),
		Listener:          netip.MustParseAddrPort("0.0.0.0:3478"),
		Number:            0x4001,
		Peer:              netip.MustParseAddrPort("[2001:db8::9]:50000"), // any family travels
		Relay:             netip.MustParseAddrPort("192.0.2.1:49160"),
		PeerLocal:         true,
		ChannelExpires:    time.Date(2026, 12, 1, 18, 0, 0, 123, time.UTC),
		PermissionExpires: time.Date(2026, 12, 1, 17, 55, 0, 0, time.UTC),
		BytesPerSecond:    1 << 20,
	}
}

// TestRequestRoundTrip: every field of a Channel comes out as it went in.
func TestRequestRoundTrip(t *testing.T) {
	c := testChannel()
	var buf bytes.Buffer
	if err := WriteMessage(&buf, Request{Op: OpPut, Channel: &c}); err != nil {
		t.Fatal(err)
	}
	body, err := ReadMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	q, err := DecodeRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if q.Op != OpPut || q.Channel == nil || *q.Channel != c {
		t.Errorf("decoded %+v, want put of %+v", q, c)
	}
}

func TestDecodeRequestRefuses(t *testing.T) {
	for _, tt := range []struct{ name, body, want string }{
		{"unknown op", `{"op":"flush"}`, `unknown op "flush"`},
		{"unknown field", `{"op":"counters","all":true}`, `unknown field "all"`},
		{"unknown channel field", `{"op":"put","channel":{"Number":16385,"Tunnel":1}}`, `unknown field "Tunnel"`},
		{"put without a channel", `{"op":"put"}`, "put carries a channel"},
		{"hello without a version", `{"op":"hello"}`, "hello carries a version"},
		{"deleteQuota of port 0", `{"op":"deleteQuota"}`, "deleteQuota carries a relay port"},
		{"counters with a channel", `{"op":"counters","channel":{}}`, "counters carries nothing"},
		{"bad address", `{"op":"put","channel":{"Peer":"10.0.0.1"}}`, "not an ip:port"},
		{"two values", `{"op":"counters"}{"op":"counters"}`, "trailing data"},
		{"not JSON", `op=put`, "invalid character"},
	} {
		if _, err := DecodeRequest([]byte(tt.body)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.want)
		}
	}
}

func TestReadMessageBounds(t *testing.T) {
	for _, tt := range []struct {
		name  string
		input []byte
	}{
		{"empty message", binary.BigEndian.AppendUint32(nil, 0)},
		{"over the limit", binary.BigEndian.AppendUint32(nil, MaxMessage+1)},
		{"short body", append(binary.BigEndian.AppendUint32(nil, 10), "{}"...)},
		{"short length", []byte{0, 0}},
	} {
		if _, err := ReadMessage(bytes.NewReader(tt.input)); err == nil {
			t.Errorf("%s: read without an error", tt.name)
		}
	}
	if _, err := ReadMessage(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Errorf("closed stream: error %v, want io.EOF", err)
	}
}

// FuzzDecodeRequest is the agent's parser of what the relay sends: it must
// never panic, and what it accepts must encode and decode to itself.
func FuzzDecodeRequest(f *testing.F) {
	c := testChannel()
	for _, q := range []Request{
		{Op: OpHello, Version: Version}, {Op: OpPut, Channel: &c}, {Op: OpDelete, Channel: &c},
		{Op: OpDeleteQuota, RelayPort: 49160}, {Op: OpCounters},
	} {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, q); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		body, err := ReadMessage(bytes.NewReader(msg))
		if err != nil {
			return
		}
		q, err := DecodeRequest(body)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteMessage(&buf, q); err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", body, err)
		}
		again, err := ReadMessage(&buf)
		if err != nil {
			t.Fatal(err)
		}
		q2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("accepted %q, refused its encoding %q: %v", body, again, err)
		}
		if q2.Op != q.Op || q2.Version != q.Version || q2.RelayPort != q.RelayPort || (q.Channel == nil) != (q2.Channel == nil) ||
			(q.Channel != nil && !sameChannel(*q.Channel, *q2.Channel)) {
			t.Fatalf("%q decoded to %+v, its encoding to %+v", body, q, q2)
		}
	})
}

// sameChannel compares times by instant: JSON keeps the instant and the
// offset, not the *time.Location.
func sameChannel(a, b fastpath.Channel) bool {
	if !a.ChannelExpires.Equal(b.ChannelExpires) || !a.PermissionExpires.Equal(b.PermissionExpires) {
		return false
	}
	a.ChannelExpires, b.ChannelExpires = time.Time{}, time.Time{}
	a.PermissionExpires, b.PermissionExpires = time.Time{}, time.Time{}
	return a == b
}
