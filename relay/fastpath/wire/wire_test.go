package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net/netip"
	"slices"
	"strconv"
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
		{"an empty batch", `{"op":"batch","batch":[]}`, "batch carries 1 to " + strconv.Itoa(MaxBatch) + " requests"},
		{"a batch with a channel", `{"op":"batch","batch":[{"op":"deleteQuota","relayPort":1}],"channel":{}}`, "batch carries 1 to " + strconv.Itoa(MaxBatch)},
		{"a batch in a batch", `{"op":"batch","batch":[{"op":"batch","batch":[{"op":"deleteQuota","relayPort":1}]}]}`, `request 0: "batch" is not a put`},
		{"a hello in a batch", `{"op":"batch","batch":[{"op":"hello","version":2}]}`, `"hello" is not a put`},
		{"counters in a batch", `{"op":"batch","batch":[{"op":"deleteQuota","relayPort":1},{"op":"counters"}]}`, `request 1: "counters" is not`},
		{"a bad request in a batch", `{"op":"batch","batch":[{"op":"put"}]}`, "request 0: put carries a channel"},
		{"a put with a batch", `{"op":"put","channel":{},"batch":[{"op":"deleteQuota","relayPort":1}]}`, "put carries no batch"},
		{"a batch too long", `{"op":"batch","batch":[` + strings.Repeat(`{"op":"deleteQuota","relayPort":1},`, MaxBatch) + `{"op":"deleteQuota","relayPort":1}]}`, "batch carries 1 to " + strconv.Itoa(MaxBatch)},
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

// TestBatchFits: a batch of MaxBatch channels of the longest kind the relay
// writes (IPv6 with zones of the longest interface names, times with
// nanoseconds and an offset, every number at its most), and its answer
// with MaxBatch errors of MaxError bytes that JSON would escape, each fit
// in a message.
func TestBatchFits(t *testing.T) {
	zoned := netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%abcdefghijklmno]:65535")
	at := time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(11*3600+59*60)))
	c := fastpath.Channel{Client: zoned, Listener: zoned, Number: 0x4fff, Peer: zoned, Relay: zoned,
		ClientLocal: true, PeerLocal: true, ChannelExpires: at, PermissionExpires: at,
		BytesPerSecond: math.MaxInt64, LocalPeerPorts: fastpath.AllPorts}
	batch := Request{Op: OpBatch}
	answer := Response{}
	for range MaxBatch {
		batch.Batch = append(batch.Batch, Request{Op: OpDelete, Channel: &c})
		answer.Errors = append(answer.Errors, ErrorText(errors.New(strings.Repeat("<\x00\"\u00e9", MaxError))))
	}
	for _, v := range []any{batch, answer} {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, v); err != nil {
			t.Fatal(err)
		}
		t.Logf("%T: %d bytes of %d", v, buf.Len()-4, MaxMessage)
	}
	if got := ErrorText(errors.New("")); got == "" {
		t.Error("an error without text is answered as a success")
	}
}

// TestBatchRoundTrip: a batch's requests come out in order, as they went in.
func TestBatchRoundTrip(t *testing.T) {
	c := testChannel()
	in := Request{Op: OpBatch, Batch: []Request{{Op: OpPut, Channel: &c}, {Op: OpDelete, Channel: &c}, {Op: OpDeleteQuota, RelayPort: 49160}}}
	var buf bytes.Buffer
	if err := WriteMessage(&buf, in); err != nil {
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
	if !sameRequest(q, in) {
		t.Errorf("decoded %+v, want %+v", q, in)
	}
}

// FuzzDecodeRequest is the agent's parser of what the relay sends: it must
// never panic, and what it accepts must encode and decode to itself.
func FuzzDecodeRequest(f *testing.F) {
	c := testChannel()
	fuzzRoundTrip(f, []Request{
		{Op: OpHello, Version: Version}, {Op: OpPut, Channel: &c}, {Op: OpDelete, Channel: &c},
		{Op: OpDeleteQuota, RelayPort: 49160}, {Op: OpCounters},
		{Op: OpBatch, Batch: []Request{{Op: OpPut, Channel: &c}, {Op: OpDeleteQuota, RelayPort: 49160}, {Op: OpDelete, Channel: &c}}},
	}, DecodeRequest, sameRequest)
}

// FuzzDecodeResponse is the relay's parser of the agent's answers: it must
// never panic, and what it accepts must encode and decode to itself.
func FuzzDecodeResponse(f *testing.F) {
	fuzzRoundTrip(f, []Response{
		{}, {Error: "peer 10.0.0.1:5000 refused by the peer policy (private)"},
		{Version: Version, Interfaces: []string{"lo", "eth0"}},
		{Counters: &fastpath.Counters{ToPeer: fastpath.Stat{Packets: 3, Bytes: 300}}},
		{Errors: []string{"", "expiry beyond the channel lifetime (10m0s)", ""}},
	}, DecodeResponse, func(p, p2 Response) bool {
		return p.Error == p2.Error && p.Version == p2.Version && slices.Equal(p.Interfaces, p2.Interfaces) && slices.Equal(p.Errors, p2.Errors) &&
			(p.Counters == nil) == (p2.Counters == nil) && (p.Counters == nil || *p.Counters == *p2.Counters)
	})
}

// fuzzRoundTrip fuzzes a decoder from framed seeds: whatever decode
// accepts must encode, and decode again to the same message.
func fuzzRoundTrip[M any](f *testing.F, seeds []M, decode func([]byte) (M, error), same func(a, b M) bool) {
	for _, m := range seeds {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, m); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		body, err := ReadMessage(bytes.NewReader(msg))
		if err != nil {
			return
		}
		m, err := decode(body)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", body, err)
		}
		again, err := ReadMessage(&buf)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := decode(again)
		if err != nil {
			t.Fatalf("accepted %q, refused its encoding %q: %v", body, again, err)
		}
		if !same(m, m2) {
			t.Fatalf("%q decoded to %+v, its encoding to %+v", body, m, m2)
		}
	})
}

// sameRequest compares requests field by field, channels by sameChannel.
func sameRequest(a, b Request) bool {
	if a.Op != b.Op || a.Version != b.Version || a.RelayPort != b.RelayPort || (a.Channel == nil) != (b.Channel == nil) ||
		(a.Channel != nil && !sameChannel(*a.Channel, *b.Channel)) || len(a.Batch) != len(b.Batch) {
		return false
	}
	for i := range a.Batch {
		if !sameRequest(a.Batch[i], b.Batch[i]) {
			return false
		}
	}
	return true
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
