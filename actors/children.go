package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/messages"
)

// children tracks the child actors of one parent by key, with safe
// passivation: a child idle for the idle timeout is stopped; until it has
// terminated, requests for its key are held, then handed to a fresh child
// that reloads its state from the store. So there is never more than one
// actor, hence one writer, per key — even while one is stopping.
//
// A parent usually has few children (a SessionSupervisor has one session
// per peer installation and bundle), and one is kept per active
// conversation: the entries stay in a small slice, and move to maps only
// past smallChildren (an Installation's supervisors). Four maps per
// supervisor cost about 2 KiB per active conversation.
type children[K comparable] struct {
	small []*childEntry[K]          // while byKey is nil
	byKey map[K]*childEntry[K]      // past smallChildren entries
	byPID map[string]*childEntry[K] // PID id -> entry, with byKey
	spawn func(ctx actor.Context, k K) *actor.PID
	// idle passivates a child not used for that long (0: never).
	idle      time.Duration
	ticking   bool
	passivate func() // counts a passivation
	// closed: the parent is stopping or restarting; no child is spawned
	// any more (close).
	closed bool
}

// childEntry is the child of one key: live, or stopping with the requests
// held for its successor.
type childEntry[K comparable] struct {
	k        K
	pid      *actor.PID
	lastUsed time.Time
	stopping bool
	held     []held
}

// smallChildren is how many children a parent keeps in its slice.
const smallChildren = 8

type held struct {
	msg    any
	sender *actor.PID
}

func newChildren[K comparable](spawn func(actor.Context, K) *actor.PID, idle time.Duration, counted func()) *children[K] {
	if idle < 0 {
		idle = 0
	}
	return &children[K]{spawn: spawn, idle: idle, passivate: counted}
}

func (c *children[K]) find(k K) *childEntry[K] {
	if c.byKey != nil {
		return c.byKey[k]
	}
	for _, e := range c.small {
		if e.k == k {
			return e
		}
	}
	return nil
}

func (c *children[K]) findPID(id string) *childEntry[K] {
	if c.byKey != nil {
		return c.byPID[id]
	}
	for _, e := range c.small {
		if e.pid.Id == id {
			return e
		}
	}
	return nil
}

func (c *children[K]) len() int {
	if c.byKey != nil {
		return len(c.byKey)
	}
	return len(c.small)
}

func (c *children[K]) add(e *childEntry[K]) {
	if c.byKey == nil && len(c.small) < smallChildren {
		c.small = append(c.small, e)
		return
	}
	if c.byKey == nil {
		c.byKey = make(map[K]*childEntry[K], 2*smallChildren)
		c.byPID = make(map[string]*childEntry[K], 2*smallChildren)
		for _, o := range c.small {
			c.byKey[o.k], c.byPID[o.pid.Id] = o, o
		}
		c.small = nil
	}
	c.byKey[e.k], c.byPID[e.pid.Id] = e, e
}

func (c *children[K]) remove(e *childEntry[K]) {
	if c.byKey != nil {
		delete(c.byKey, e.k)
		delete(c.byPID, e.pid.Id)
		if len(c.byKey) == 0 {
			// Go maps never shrink: give back what a peak of children
			// made them hold.
			c.byKey, c.byPID = nil, nil
		}
		return
	}
	for i, o := range c.small {
		if o == e {
			last := len(c.small) - 1
			c.small[i] = c.small[last]
			c.small[last] = nil
			c.small = c.small[:last]
			break
		}
	}
	if len(c.small) == 0 {
		c.small = nil
	}
}

// forward delivers msg (with its original sender) to the child of k,
// spawning it if needed, or holds it while that child is stopping.
// Once the parent is closed, a request for a key without a live child is
// refused (refuseClosed).
func (c *children[K]) forward(ctx actor.Context, k K, msg any, sender *actor.PID) {
	e := c.find(k)
	if e != nil && e.stopping {
		if c.closed {
			refuseClosed(ctx, msg, sender) // its successor would never be stopped
			return
		}
		e.held = append(e.held, held{msg, sender})
		return
	}
	if e == nil {
		if c.closed {
			refuseClosed(ctx, msg, sender)
			return
		}
		e = &childEntry[K]{k: k, pid: c.spawn(ctx, k)}
		c.add(e)
		if c.idle > 0 {
			c.tick(ctx)
		}
	}
	ctx.RequestWithCustomSender(e.pid, msg, sender)
	if c.idle > 0 {
		e.lastUsed = time.Now()
	}
}

// close is called when the parent starts stopping or restarting: protoactor
// stops its children, but the parent still runs the user messages already
// in its mailbox until they have terminated, and a child spawned for one of
// them would never be stopped, so the parent would never terminate (and its
// name would stay registered). Requests for a key without a live child are
// refused from now on, held ones included.
func (c *children[K]) close() { c.closed = true }

// refuseClosed answers a request that a closed parent will not hand to a
// child: an encrypt or a decrypt gets CLOSED (a send reports it, a delivery
// is not taken and comes again), a sessions query an empty reply, a
// ResetSending CLOSED (the bundle advert is not taken, and comes again).
func refuseClosed(ctx actor.Context, msg any, sender *actor.PID) {
	if sender == nil {
		return
	}
	const detail = "stopping: not handed to a session"
	switch m := msg.(type) {
	case *messages.EncryptRequest:
		ctx.Send(sender, &messages.EncryptResponse{PeerInstallationId: m.PeerInstallationId, Error: messages.ErrorCode_CLOSED, Detail: detail})
	case *messages.DecryptRequest:
		ctx.Send(sender, &messages.DecryptResponse{Error: messages.ErrorCode_CLOSED, Detail: detail})
	case *messages.SessionsQuery:
		ctx.Send(sender, &messages.SessionsReply{})
	case *messages.ResetSending:
		ctx.Send(sender, &messages.Processed{Error: messages.ErrorCode_CLOSED, Detail: detail})
	}
}

// tick schedules the next Tick to the parent while it has children. The
// parent's own timer, not protoactor's ReceiveTimeout, which races with the
// actor's goroutine in this protoactor version (seen with -race).
func (c *children[K]) tick(ctx actor.Context) {
	if c.ticking {
		return
	}
	c.ticking = true
	root, self := ctx.ActorSystem().Root, later(ctx)
	time.AfterFunc(c.idle/2, func() { root.Send(self, &messages.Tick{}) })
}

// onTick passivates the children idle for longer than the idle timeout.
func (c *children[K]) onTick(ctx actor.Context) {
	c.ticking = false
	now := time.Now()
	var idle []*childEntry[K]
	c.each(func(e *childEntry[K]) {
		if !e.stopping && now.Sub(e.lastUsed) >= c.idle {
			idle = append(idle, e)
		}
	})
	for _, e := range idle {
		c.stop(ctx, e)
	}
	if c.len() > 0 {
		c.tick(ctx)
	}
}

func (c *children[K]) each(fn func(*childEntry[K])) {
	if c.byKey != nil {
		for _, e := range c.byKey {
			fn(e)
		}
		return
	}
	for _, e := range c.small {
		fn(e)
	}
}

// stop passivates a child: it stops after the messages already in its
// mailbox; new ones are held until it has terminated.
func (c *children[K]) stop(ctx actor.Context, e *childEntry[K]) {
	e.stopping = true
	ctx.Poison(e.pid)
	if c.passivate != nil {
		c.passivate()
	}
}

// terminated forgets a child; held requests go to a fresh one.
func (c *children[K]) terminated(ctx actor.Context, pid *actor.PID) {
	e := c.findPID(pid.Id)
	if e == nil {
		return
	}
	c.remove(e)
	for _, h := range e.held {
		c.forward(ctx, e.k, h.msg, h.sender) // refused once closed
	}
}
