// Package wire is the message format between the relay and the fast-path
// agent (`turnpike fastpath`), the one process of the relay pod that holds
// the capabilities to load the TC program and write its maps. The relay,
// which parses untrusted input and runs with no capabilities, asks the
// agent over a Unix socket to put and delete channels; the agent re-checks
// every request (see relay/fastpathagent.go) and answers.
//
// A message is a 4-byte big-endian length and that many bytes of JSON (one
// Request or one Response). The relay speaks first, with a hello carrying
// Version; after that every request gets exactly one response, in order.
// A batch (version 2) carries up to MaxBatch puts, deletes and
// deleteQuotas, done in order, and is answered once, with one error per
// request when any failed: the relay writes channels without waiting for
// the agent, and several that are pending travel in one round trip.
// JSON keeps the Channel generic: its fields travel by name (addresses as
// text, so any family; times as RFC 3339), and a field added to
// fastpath.Channel travels without a change here. Unknown fields are
// refused rather than ignored, so a relay and an agent of different builds
// fail at once instead of silently dropping what the other meant; bump
// Version when the meaning of a field changes.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
)

// Version is the protocol version the hello carries: 2 added the batch.
// The agent also serves a relay of MinVersion, which sends no batch, and
// answers its hello with the version the relay speaks.
const (
	Version    = 2
	MinVersion = 1
)

// MaxMessage bounds a message's length: a Channel is a few hundred bytes,
// so a peer that announces more is broken or hostile.
const MaxMessage = 16 << 10

// MaxBatch bounds the requests of a batch so that it, and its answer, fit
// in MaxMessage (TestBatchFits).
const MaxBatch = 24

// MaxError bounds one error of a batch's answer (ErrorText).
const MaxError = 256

// Ops of a Request.
const (
	OpHello       = "hello"
	OpPut         = "put"
	OpDelete      = "delete"
	OpDeleteQuota = "deleteQuota"
	OpCounters    = "counters"
	OpBatch       = "batch"
)

// Request is what the relay sends.
type Request struct {
	Op string `json:"op"`
	// Version is the relay's protocol version (hello).
	Version int `json:"version,omitempty"`
	// Channel is the channel to put or delete.
	Channel *fastpath.Channel `json:"channel,omitempty"`
	// RelayPort is the allocation whose bandwidth quota to delete.
	RelayPort uint16 `json:"relayPort,omitempty"`
	// Batch are the requests of a batch: puts, deletes and deleteQuotas.
	Batch []Request `json:"batch,omitempty"`
}

// Response is the agent's answer to one Request.
type Response struct {
	// Error says why the request was refused or failed; empty is success.
	Error string `json:"error,omitempty"`
	// Version and Interfaces answer a hello: the agent's protocol version
	// and the interfaces the program is attached to.
	Version    int      `json:"version,omitempty"`
	Interfaces []string `json:"interfaces,omitempty"`
	// Counters answers a counters request.
	Counters *fastpath.Counters `json:"counters,omitempty"`
	// Errors answer a batch of which a request failed: one per request,
	// empty for those that succeeded. A batch that fully succeeded is
	// answered without.
	Errors []string `json:"errors,omitempty"`
}

// Validate checks that a request carries what its op needs and nothing
// else, so the agent's handlers can rely on it.
func (q *Request) Validate() error {
	if q.Op != OpBatch && q.Batch != nil {
		return fmt.Errorf("%s carries no batch", q.Op)
	}
	switch q.Op {
	case OpHello:
		if q.Version <= 0 || q.Channel != nil || q.RelayPort != 0 {
			return errors.New("hello carries a version and nothing else")
		}
	case OpPut, OpDelete:
		if q.Channel == nil || q.Version != 0 || q.RelayPort != 0 {
			return fmt.Errorf("%s carries a channel and nothing else", q.Op)
		}
	case OpDeleteQuota:
		if q.RelayPort == 0 || q.Version != 0 || q.Channel != nil {
			return errors.New("deleteQuota carries a relay port and nothing else")
		}
	case OpCounters:
		if q.Version != 0 || q.Channel != nil || q.RelayPort != 0 {
			return errors.New("counters carries nothing")
		}
	case OpBatch:
		if len(q.Batch) == 0 || len(q.Batch) > MaxBatch || q.Version != 0 || q.Channel != nil || q.RelayPort != 0 {
			return fmt.Errorf("batch carries 1 to %d requests and nothing else", MaxBatch)
		}
		for i := range q.Batch {
			r := &q.Batch[i]
			if r.Op != OpPut && r.Op != OpDelete && r.Op != OpDeleteQuota {
				return fmt.Errorf("batch request %d: %q is not a put, delete or deleteQuota", i, r.Op)
			}
			if err := r.Validate(); err != nil {
				return fmt.Errorf("batch request %d: %w", i, err)
			}
		}
	default:
		return fmt.Errorf("unknown op %q", q.Op)
	}
	return nil
}

// ErrorText is err as a batch's answer carries it: at most MaxError bytes
// of printable ASCII that JSON does not escape, so that a batch's answer
// fits in a message whatever its errors say.
func ErrorText(err error) string {
	b := []byte(err.Error())
	if len(b) == 0 {
		return "failed" // empty is success
	}
	if len(b) > MaxError {
		b = b[:MaxError]
	}
	for i, c := range b {
		if c < ' ' || c > '~' || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b[i] = '?'
		}
	}
	return string(b)
}

// WriteMessage writes v (a Request or a Response) as one message.
func WriteMessage(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > MaxMessage {
		return fmt.Errorf("message of %d bytes, more than %d", len(body), MaxMessage)
	}
	msg := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	_, err = w.Write(append(msg, body...))
	return err
}

// ReadMessage reads one message's body.
func ReadMessage(r io.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n == 0 || n > MaxMessage {
		return nil, fmt.Errorf("message length %d outside 1..%d", n, MaxMessage)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("message body: %w", io.ErrUnexpectedEOF)
	}
	return body, nil
}

// DecodeRequest parses and validates a request's body.
func DecodeRequest(body []byte) (Request, error) {
	var q Request
	if err := decodeStrict(body, &q); err != nil {
		return Request{}, fmt.Errorf("request: %w", err)
	}
	if err := q.Validate(); err != nil {
		return Request{}, fmt.Errorf("request: %w", err)
	}
	return q, nil
}

// DecodeResponse parses a response's body.
func DecodeResponse(body []byte) (Response, error) {
	var p Response
	if err := decodeStrict(body, &p); err != nil {
		return Response{}, fmt.Errorf("response: %w", err)
	}
	return p, nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data after the message")
	}
	return nil
}
