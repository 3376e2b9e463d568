package actors

import (
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// An Installation asks its SessionSupervisors to encrypt and decrypt twice
// per message. A protoactor future per request (NewFuture: a process
// registered under a fresh name, a timer, a condition variable; then a
// lookup of that name for the reply and a continuation closure) cost 4.8 µs
// and 10 allocations per round trip in a Go benchmark, against 2.2 µs for a
// plain message and reply. asks replaces them with reply slots: processes
// registered once per Installation and reused, whose PID caches its
// process, so a reply costs no registry lookup. A slot turns the reply into
// an askReply in the Installation's mailbox, where the continuation of the
// pending ask runs.
//
// A request gets exactly one reply: the answer, or protoactor's
// DeadLetterResponse when the receiver is gone. A slot is reused only after
// its reply arrived. One whose reply is late (RequestTimeout) is abandoned:
// removed from the registry, never reused, and its late reply is dropped.
//
// Slots are kept while the Installation asks: an Installation that asked
// nothing for a whole sweep period (a quarter of RequestTimeout, after the
// first) releases its free slots, so an idle one (a million may be hosted)
// keeps none.
type asks struct {
	pending map[*askSlot]pendingAsk
	free    []*askSlot
	n       int  // slots made, for their names
	armed   bool // an askSweep is scheduled
	used    bool // an ask since the last sweep
}

type pendingAsk struct {
	cont     func(res any, err error)
	deadline time.Time
}

// askSlot is a reusable reply address of one Installation.
type askSlot struct {
	pid  *actor.PID
	root *actor.RootContext
	to   *actor.PID // the Installation (uncached: see later)
}

// askReply is a reply that reached a slot.
type askReply struct {
	slot *askSlot
	msg  any
}

// askSweep fails the asks whose reply is overdue.
type askSweep struct{}

func (s *askSlot) SendUserMessage(_ *actor.PID, message any) {
	_, msg, _ := actor.UnwrapEnvelope(message)
	s.root.Send(s.to, &askReply{slot: s, msg: msg})
}

func (s *askSlot) SendSystemMessage(*actor.PID, any) {}

func (s *askSlot) Stop(*actor.PID) {}

// ask takes a reply slot for one request and returns its PID, the sender to
// give the request; cont runs in the Installation, with the reply or with
// ErrTimeout after about timeout.
func (a *asks) ask(ctx actor.Context, timeout time.Duration, cont func(res any, err error)) *actor.PID {
	if a.pending == nil {
		a.pending = make(map[*askSlot]pendingAsk)
	}
	var s *askSlot
	if n := len(a.free); n > 0 {
		s, a.free = a.free[n-1], a.free[:n-1]
	} else {
		s = &askSlot{root: ctx.ActorSystem().Root, to: later(ctx)}
		a.n++
		s.pid, _ = ctx.ActorSystem().ProcessRegistry.Add(s, ctx.Self().Id+"/ask$"+strconv.Itoa(a.n))
	}
	a.pending[s] = pendingAsk{cont: cont, deadline: time.Now().Add(timeout)}
	a.used = true
	if !a.armed {
		a.arm(ctx, timeout)
	}
	return s.pid
}

func (a *asks) arm(ctx actor.Context, after time.Duration) {
	a.armed = true
	root, self := ctx.ActorSystem().Root, later(ctx)
	time.AfterFunc(after, func() { root.Send(self, &askSweep{}) })
}

// replied runs the continuation of the ask a reply is for, and frees its
// slot; a reply for no pending ask (an abandoned slot's) is dropped.
func (a *asks) replied(m *askReply) {
	p, ok := a.pending[m.slot]
	if !ok {
		return
	}
	delete(a.pending, m.slot)
	a.free = append(a.free, m.slot)
	if _, gone := m.msg.(*actor.DeadLetterResponse); gone {
		// The receiver had stopped (a child that terminated as it was
		// asked, or one of a stopping parent): as for a released ask,
		// not an answer, and not a timeout either.
		p.cont(nil, ErrClosed)
		return
	}
	p.cont(m.msg, nil)
}

// sweep fails the overdue asks and abandons their slots, releases the free
// slots of an Installation that asked nothing since the last sweep, and
// schedules the next sweep while there are asks or slots.
func (a *asks) sweep(ctx actor.Context, timeout time.Duration) {
	a.armed = false
	reg := ctx.ActorSystem().ProcessRegistry
	now := time.Now()
	var overdue []pendingAsk
	for s, p := range a.pending {
		if !now.Before(p.deadline) {
			delete(a.pending, s)
			reg.Remove(s.pid)
			overdue = append(overdue, p)
		}
	}
	if !a.used {
		for _, s := range a.free {
			reg.Remove(s.pid)
		}
		a.free = nil
	}
	a.used = false
	if len(a.pending) > 0 || len(a.free) > 0 {
		a.arm(ctx, timeout/4)
	}
	for _, p := range overdue {
		p.cont(nil, ErrTimeout)
	}
}

// release removes every slot from the registry (the Installation stopped,
// or restarts after a panic) and fails the pending asks at once with
// ErrClosed, as a sweep fails overdue ones: their replies would never be
// seen, and what waits on them (a transport's delivery, which a node's
// Close waits for; a Send) would wait for RequestTimeout.
func (a *asks) release(ctx actor.Context) {
	reg := ctx.ActorSystem().ProcessRegistry
	for s := range a.pending {
		reg.Remove(s.pid)
	}
	for _, s := range a.free {
		reg.Remove(s.pid)
	}
	pending := a.pending
	a.pending, a.free = nil, nil
	for _, p := range pending {
		p.cont(nil, ErrClosed)
	}
}
