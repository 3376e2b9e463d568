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
type children[K comparable] struct {
	live     map[K]*actor.PID
	keyOf    map[string]K // PID id -> key, for live and stopping children
	stopping map[K][]held
	lastUsed map[K]time.Time
	spawn    func(ctx actor.Context, k K) *actor.PID
	// idle passivates a child not used for that long (0: never).
	idle      time.Duration
	ticking   bool
	peak      int    // most children at once since the maps were made
	passivate func() // counts a passivation
}

type held struct {
	msg    any
	sender *actor.PID
}

func newChildren[K comparable](spawn func(actor.Context, K) *actor.PID, idle time.Duration, counted func()) *children[K] {
	if idle < 0 {
		idle = 0
	}
	return &children[K]{
		live: map[K]*actor.PID{}, keyOf: map[string]K{}, stopping: map[K][]held{}, lastUsed: map[K]time.Time{},
		spawn: spawn, idle: idle, passivate: counted,
	}
}

// forward delivers msg (with its original sender) to the child of k,
// spawning it if needed, or holds it while that child is stopping.
func (c *children[K]) forward(ctx actor.Context, k K, msg any, sender *actor.PID) {
	if list, ok := c.stopping[k]; ok {
		c.stopping[k] = append(list, held{msg, sender})
		return
	}
	ctx.RequestWithCustomSender(c.get(ctx, k), msg, sender)
	if c.idle > 0 {
		c.lastUsed[k] = time.Now()
	}
}

// get returns the live child of k, spawning it if needed. Callers that may
// race with a passivation use forward instead.
func (c *children[K]) get(ctx actor.Context, k K) *actor.PID {
	if pid := c.live[k]; pid != nil {
		return pid
	}
	pid := c.spawn(ctx, k)
	c.live[k] = pid
	c.keyOf[pid.Id] = k
	if len(c.keyOf) > c.peak {
		c.peak = len(c.keyOf)
	}
	if c.idle > 0 {
		c.lastUsed[k] = time.Now()
		c.tick(ctx)
	}
	return pid
}

// tick schedules the next Tick to the parent while it has children. The
// parent's own timer, not protoactor's ReceiveTimeout, which races with the
// actor's goroutine in this protoactor version (seen with -race).
func (c *children[K]) tick(ctx actor.Context) {
	if c.ticking {
		return
	}
	c.ticking = true
	root, self := ctx.ActorSystem().Root, ctx.Self()
	time.AfterFunc(c.idle/2, func() { root.Send(self, &messages.Tick{}) })
}

// onTick passivates the children idle for longer than the idle timeout.
func (c *children[K]) onTick(ctx actor.Context) {
	c.ticking = false
	now := time.Now()
	for k, pid := range c.live {
		if now.Sub(c.lastUsed[k]) >= c.idle {
			c.stop(ctx, k, pid)
		}
	}
	if len(c.live) > 0 {
		c.tick(ctx)
	}
}

// stop passivates a child: it stops after the messages already in its
// mailbox; new ones are held until it has terminated.
func (c *children[K]) stop(ctx actor.Context, k K, pid *actor.PID) {
	delete(c.live, k)
	delete(c.lastUsed, k)
	c.stopping[k] = nil
	ctx.Poison(pid)
	if c.passivate != nil {
		c.passivate()
	}
}

// terminated forgets a child; held requests go to a fresh one.
func (c *children[K]) terminated(ctx actor.Context, pid *actor.PID) {
	k, ok := c.keyOf[pid.Id]
	if !ok {
		return
	}
	delete(c.keyOf, pid.Id)
	if live := c.live[k]; live != nil && live.Equal(pid) {
		delete(c.live, k) // stopped by its supervisor after too many failures
		delete(c.lastUsed, k)
	}
	list, stopping := c.stopping[k]
	if !stopping {
		c.shrink()
		return
	}
	delete(c.stopping, k)
	for _, h := range list {
		c.forward(ctx, k, h.msg, h.sender)
	}
	c.shrink()
}

// shrink gives back the memory of maps that grew for a peak of children
// once every child has stopped (Go maps never shrink on their own).
func (c *children[K]) shrink() {
	if len(c.keyOf) > 0 || c.peak < 1024 {
		if len(c.keyOf) > c.peak {
			c.peak = len(c.keyOf)
		}
		return
	}
	c.live, c.keyOf, c.stopping, c.lastUsed = map[K]*actor.PID{}, map[string]K{}, map[K][]held{}, map[K]time.Time{}
	c.peak = 0
}
