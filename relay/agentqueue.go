package relay

import (
	"container/list"

	"github.com/turnpike-dev/turnpike/relay/fastpath"
	"github.com/turnpike-dev/turnpike/relay/fastpath/wire"
)

// The relay writes its channels into the agent's kernel table without
// waiting for the agent: pion's handlers only queue the write, and one
// writer per agent connection (offloader.writeToAgent) sends what is queued
// as batches, one round trip at a time. Until the agent has written a
// channel, the kernel does not know it and its datagrams go to the
// userspace relay, as they would without a fast path.
//
// The queue keeps the writes in the order they were made and holds at most
// one per channel: a newer write of a channel replaces a queued older one
// and takes its place at the end, because the agent's state of a channel is
// that of the last write it did (a put replaces, a delete removes). So a
// delete never overtakes its put, and a put whose channel is deleted before
// it is sent never reaches the agent. A deleteQuota follows the deletes of
// its allocation's channels, as it was queued after them.

// agentQueueLimit bounds the queued writes of channels the kernel does not
// hold yet: past it a new channel stays in userspace. The writes of
// channels already offloaded (refreshes, deletes) are always queued, one at
// most per channel, so the queue never holds more than this plus the
// relay's offloaded channels. A variable for tests.
var agentQueueLimit = 4096

// agentOp is one queued write: a put or delete of a channel of alloc, or a
// deleteQuota.
type agentOp struct {
	key   agentOpKey
	alloc allocKey
	req   wire.Request
}

// agentOpKey is what a newer write replaces an older one by: the channel's
// key in the kernel, or the relay port of a deleteQuota.
type agentOpKey struct {
	channel channelKey
	quota   uint16
}

func channelOp(k allocKey, op string, c fastpath.Channel) *agentOp {
	return &agentOp{key: agentOpKey{channel: keyOf(c)}, alloc: k, req: wire.Request{Op: op, Channel: &c}}
}

func quotaOp(relayPort uint16) *agentOp {
	return &agentOp{key: agentOpKey{quota: relayPort}, req: wire.Request{Op: wire.OpDeleteQuota, RelayPort: relayPort}}
}

// agentQueue is one connection's queue; the offloader's mutex guards it.
type agentQueue struct {
	ops   list.List // of *agentOp, oldest first
	byKey map[agentOpKey]*list.Element
	// inFlight is the size of the batch the writer waits on the answer to.
	inFlight int
	// wake tells the writer there is something to send.
	wake chan struct{}
}

func newAgentQueue() *agentQueue {
	return &agentQueue{byKey: map[agentOpKey]*list.Element{}, wake: make(chan struct{}, 1)}
}

// add queues op, replacing a queued write of the same channel. A fresh
// write (a channel the kernel does not hold) is refused when the queue is
// full.
func (q *agentQueue) add(op *agentOp, fresh bool) bool {
	if e, ok := q.byKey[op.key]; ok {
		q.ops.Remove(e)
	} else if fresh && q.ops.Len() >= agentQueueLimit {
		return false
	}
	q.byKey[op.key] = q.ops.PushBack(op)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// queued says whether a write of key waits to be sent.
func (q *agentQueue) queued(key agentOpKey) bool {
	_, ok := q.byKey[key]
	return ok
}

// take removes up to n writes from the front.
func (q *agentQueue) take(n int) []*agentOp {
	var ops []*agentOp
	for len(ops) < n && q.ops.Len() > 0 {
		op := q.ops.Remove(q.ops.Front()).(*agentOp)
		delete(q.byKey, op.key)
		ops = append(ops, op)
	}
	return ops
}

// pending is how many writes the agent has not answered yet.
func (q *agentQueue) pending() int { return q.ops.Len() + q.inFlight }
