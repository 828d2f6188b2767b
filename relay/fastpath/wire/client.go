package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
)

// requestTimeout bounds one request's round trip: an agent that stopped
// answering costs the relay its fast path, never a hung writer.
const requestTimeout = 2 * time.Second

// Client is the relay's end of the socket. It has the methods of
// *fastpath.Offload, and Batch. After the first failed exchange the
// connection is closed and every call fails: Done says so.
type Client struct {
	// exchanging is held for a whole round trip: one at a time.
	exchanging sync.Mutex
	conn       net.Conn
	interfaces []string

	mu     sync.Mutex // guards broken; never held across I/O
	broken error
	done   chan struct{}
}

// Dial connects to the agent's socket and says hello. An agent that could
// not load the program answers the hello with why; that is the error.
func Dial(ctx context.Context, socket string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, done: make(chan struct{})}
	p, err := c.exchange(Request{Op: OpHello, Version: Version})
	if err != nil {
		c.Close()
		return nil, err
	}
	if p.Version != Version {
		c.Close()
		return nil, fmt.Errorf("fast-path agent speaks version %d, the relay %d", p.Version, Version)
	}
	c.interfaces = p.Interfaces
	return c, nil
}

// Put writes or refreshes a channel.
func (c *Client) Put(ch fastpath.Channel) error {
	_, err := c.exchange(Request{Op: OpPut, Channel: &ch})
	return err
}

// Delete removes a channel.
func (c *Client) Delete(ch fastpath.Channel) error {
	_, err := c.exchange(Request{Op: OpDelete, Channel: &ch})
	return err
}

// DeleteQuota removes the bandwidth buckets of the allocation on relayPort.
func (c *Client) DeleteQuota(relayPort uint16) error {
	_, err := c.exchange(Request{Op: OpDeleteQuota, RelayPort: relayPort})
	return err
}

// Batch sends up to MaxBatch puts, deletes and deleteQuotas in one round
// trip; the agent does them in order. refused has one entry per request:
// nil, or the *RefusedError the agent answered it with. err is a failed
// connection, as for the other calls.
func (c *Client) Batch(reqs []Request) (refused []error, err error) {
	p, err := c.exchange(Request{Op: OpBatch, Batch: reqs})
	if err != nil {
		var r *RefusedError
		if errors.As(err, &r) { // the batch itself: a bug on one side
			c.fail(err)
		}
		return nil, err
	}
	refused = make([]error, len(reqs))
	if p.Errors == nil {
		return refused, nil
	}
	if len(p.Errors) != len(reqs) {
		err = fmt.Errorf("fast-path agent answered a batch of %d with %d errors", len(reqs), len(p.Errors))
		c.fail(err)
		return nil, err
	}
	for i, e := range p.Errors {
		if e != "" {
			refused[i] = &RefusedError{e}
		}
	}
	return refused, nil
}

// Counters are the program's totals since the agent loaded it.
func (c *Client) Counters() (fastpath.Counters, error) {
	p, err := c.exchange(Request{Op: OpCounters})
	if err != nil {
		return fastpath.Counters{}, err
	}
	if p.Counters == nil {
		return fastpath.Counters{}, errors.New("fast-path agent answered counters without counters")
	}
	return *p.Counters, nil
}

// Interfaces are the interfaces the agent's program is attached to.
func (c *Client) Interfaces() []string { return c.interfaces }

// Done is closed once the connection has failed or been closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended; nil while it works.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}

// Close ends the connection, at once even while an exchange waits for its
// answer; the agent then deletes every entry this relay put.
func (c *Client) Close() error {
	c.fail(errors.New("closed"))
	return nil
}

// RefusedError is a request the agent answered with an error: the
// connection is fine, the entry is not in the kernel.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "fast-path agent: " + e.Reason }

// exchange sends q and reads its response. A transport failure breaks the
// connection for good; a refusal does not.
func (c *Client) exchange(q Request) (Response, error) {
	c.exchanging.Lock()
	defer c.exchanging.Unlock()
	if err := c.Err(); err != nil {
		return Response{}, fmt.Errorf("fast-path agent connection: %w", err)
	}
	p, err := c.roundTrip(q)
	if err != nil {
		c.fail(err)
		return Response{}, fmt.Errorf("fast-path agent connection: %w", err)
	}
	if p.Error != "" {
		return p, &RefusedError{p.Error}
	}
	return p, nil
}

func (c *Client) roundTrip(q Request) (Response, error) {
	if err := c.conn.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return Response{}, err
	}
	if err := WriteMessage(c.conn, q); err != nil {
		return Response{}, err
	}
	body, err := ReadMessage(c.conn)
	if err != nil {
		return Response{}, err
	}
	return DecodeResponse(body)
}

// fail closes the connection for good.
func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return
	}
	c.broken = err
	c.conn.Close()
	close(c.done)
}
