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

// requestTimeout bounds one request's round trip. The relay calls Put from
// pion's ChannelBind handler: an agent that stopped answering must cost a
// client a short delay and the relay its fast path, never a hung handler.
const requestTimeout = 2 * time.Second

// Client is the relay's end of the socket. It has the methods of
// *fastpath.Offload, so the relay drives the agent's kernel table as it
// would drive one it loaded itself. After the first failed exchange the
// connection is closed and every call fails: Done says so.
type Client struct {
	mu         sync.Mutex
	conn       net.Conn
	interfaces []string
	broken     error
	done       chan struct{}
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

// Close ends the connection; the agent then deletes every entry this
// relay put.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return Response{}, fmt.Errorf("fast-path agent connection: %w", c.broken)
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

// fail closes the connection; c.mu is held.
func (c *Client) fail(err error) {
	if c.broken != nil {
		return
	}
	c.broken = err
	c.conn.Close()
	close(c.done)
}
