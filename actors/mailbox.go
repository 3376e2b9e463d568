package actors

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// mailbox is the mailbox of every engine actor. It behaves as
// protoactor-go's default unbounded mailbox (system messages first, a
// suspended mailbox runs system messages only, a panic is escalated to the
// actor's supervisor, the dispatcher's throughput messages per pass before
// yielding) but is one small struct: the default one is four allocations
// (its struct, a ring buffer of ten slots, a lock-free queue and that
// queue's first node), about 380 bytes per actor, and the engine keeps two
// actors per active conversation. The queues are slices that start empty
// and are dropped again once drained if they grew past smallQueue.
// MessageBatch unwrapping and mailbox middlewares are not supported; the
// engine uses neither.
type mailbox struct {
	mu         sync.Mutex
	user, sys  queue
	scheduled  bool // a pass is scheduled or running
	suspended  bool
	invoker    actor.MessageInvoker
	dispatcher actor.Dispatcher
	// pass is m.process, bound once: a method value made on every
	// schedule is an allocation per scheduled pass.
	pass func()
	// failures counts the panics that escape the actor (the engine's
	// ActorFailures; nil: not counted).
	failures *atomic.Int64
	// depth is the engine's count of queued user messages (MailboxDepth):
	// one of its shards, nil when not counted.
	depth *atomic.Int64
}

var _ actor.Mailbox = (*mailbox)(nil)

// queue is a FIFO of messages: items[head:] are waiting.
type queue struct {
	items []any
	head  int
}

// smallQueue is the largest capacity a drained queue keeps (a busy actor
// that drains often need not grow its queue again every time).
const smallQueue = 16

func (q *queue) push(m any) {
	if q.head >= 32 && q.head > len(q.items)/2 {
		// Mostly consumed: move the waiting ones to the front instead of
		// growing.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, m)
}

func (q *queue) pop() any {
	if q.head == len(q.items) {
		return nil
	}
	m := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		if cap(q.items) > smallQueue {
			q.items = nil
		} else {
			q.items = q.items[:0]
		}
		q.head = 0
	}
	return m
}

func (q *queue) len() int { return len(q.items) - q.head }

func (m *mailbox) PostUserMessage(msg any) {
	if m.depth != nil {
		m.depth.Add(1) // before it can be taken, so the count never goes below zero
	}
	m.mu.Lock()
	m.user.push(msg)
	m.scheduleLocked()
}

func (m *mailbox) PostSystemMessage(msg any) {
	m.mu.Lock()
	m.sys.push(msg)
	m.scheduleLocked()
}

// scheduleLocked schedules a pass unless one is scheduled or running, and
// unlocks.
func (m *mailbox) scheduleLocked() {
	if m.scheduled {
		m.mu.Unlock()
		return
	}
	m.scheduled = true
	if m.pass == nil {
		m.pass = m.process
	}
	m.mu.Unlock()
	m.dispatcher.Schedule(m.pass)
}

func (m *mailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker, m.dispatcher = invoker, dispatcher
}

func (m *mailbox) Start() {}

func (m *mailbox) UserMessageCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.user.len()
}

// next takes the next message to run: a system message first; a user
// message unless suspended. With none it ends the pass (under the same
// lock as a post checks it, so a message is never left without one).
func (m *mailbox) next() (msg any, system bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if msg = m.sys.pop(); msg != nil {
		return msg, true
	}
	if !m.suspended {
		if msg = m.user.pop(); msg != nil {
			if m.depth != nil {
				m.depth.Add(-1)
			}
			return msg, false
		}
	}
	m.scheduled = false
	return nil, false
}

func (m *mailbox) setSuspended(v bool) {
	m.mu.Lock()
	m.suspended = v
	m.mu.Unlock()
}

// process is one scheduled pass: it runs until the mailbox is empty or
// suspended.
func (m *mailbox) process() {
	for m.run() {
	}
}

// run invokes messages until next ends the pass (false) or one panics
// (true: the panic is escalated, and the pass goes on, with the suspension
// the escalation sent first in line).
func (m *mailbox) run() (again bool) {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			if m.failures != nil {
				m.failures.Add(1)
			}
			m.invoker.EscalateFailure(r, msg)
			again = true
		}
	}()
	throughput := m.dispatcher.Throughput()
	for i := 1; ; i++ {
		if i > throughput {
			i = 1
			runtime.Gosched()
		}
		var system bool
		if msg, system = m.next(); msg == nil {
			return false
		}
		if !system {
			m.invoker.InvokeUserMessage(msg)
			continue
		}
		switch msg.(type) {
		case *actor.SuspendMailbox:
			m.setSuspended(true)
		case *actor.ResumeMailbox:
			m.setSuspended(false)
		default:
			m.invoker.InvokeSystemMessage(msg)
		}
	}
}
