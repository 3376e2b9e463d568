package actors

import (
	"strconv"
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/actors/deadline"
)

// The Engine asks an Installation once per Send (Request) and once per
// delivery (gateway), from goroutines outside the actor system. A
// protoactor future per request (NewFuture: a process registered under a
// fresh name, an AfterFunc timer, a condition variable, and a registry
// removal after) cost about 13 allocations each; these are reply slots
// instead, as the Installation's own asks (ask.go): processes registered
// once and reused, each with a one-reply channel, timed out by a shared
// coarse clock (actors/deadline).
//
// A request gets exactly one reply: the answer, or protoactor's
// DeadLetterResponse when the receiver is gone. A slot goes back to the
// pool only after its reply was read. One whose reply is late is abandoned:
// removed from the registry and never reused; its late reply, if it comes,
// fills its channel and is dropped with it.
type replySlots struct {
	sys   *actor.ActorSystem
	waits *deadline.Clock // RequestTimeout
	mu    sync.Mutex
	free  []*replySlot
	n     int // slots made, for their names
}

// maxFreeReplySlots bounds the slots kept for reuse: past as many
// concurrent requests, the extra ones are removed as they finish.
const maxFreeReplySlots = 4096

type replySlot struct {
	pid *actor.PID
	ch  chan any
}

func (s *replySlot) SendUserMessage(_ *actor.PID, message any) {
	_, msg, _ := actor.UnwrapEnvelope(message)
	select {
	case s.ch <- msg:
	default: // a second reply: dropped
	}
}

func (s *replySlot) SendSystemMessage(*actor.PID, any) {}

func (s *replySlot) Stop(*actor.PID) {}

// get takes a slot: its PID is the sender to give one request.
func (r *replySlots) get() *replySlot {
	r.mu.Lock()
	if n := len(r.free); n > 0 {
		s := r.free[n-1]
		r.free = r.free[:n-1]
		r.mu.Unlock()
		return s
	}
	r.n++
	name := "engine$reply$" + strconv.Itoa(r.n)
	r.mu.Unlock()
	s := &replySlot{ch: make(chan any, 1)}
	s.pid, _ = r.sys.ProcessRegistry.Add(s, name)
	return s
}

// request sends msg to pid with a slot as its sender and waits for the
// reply.
func (r *replySlots) request(pid *actor.PID, msg any) (any, error) {
	s := r.get()
	r.sys.Root.RequestWithCustomSender(pid, msg, s.pid)
	return r.wait(s)
}

// wait reads the reply of the request s was given to, as a future's
// Result would: the reply, actor.ErrDeadLetter, or actor.ErrTimeout after
// RequestTimeout (at most an eighth more: actors/deadline).
func (r *replySlots) wait(s *replySlot) (any, error) {
	msg, err := deadline.Recv(r.waits, s.ch, nil)
	if err != nil {
		r.sys.ProcessRegistry.Remove(s.pid)
		return nil, actor.ErrTimeout
	}
	r.put(s)
	if _, gone := msg.(*actor.DeadLetterResponse); gone {
		return nil, actor.ErrDeadLetter
	}
	return msg, nil
}

func (r *replySlots) put(s *replySlot) {
	r.mu.Lock()
	if len(r.free) < maxFreeReplySlots {
		r.free = append(r.free, s)
		s = nil
	}
	r.mu.Unlock()
	if s != nil {
		r.sys.ProcessRegistry.Remove(s.pid)
	}
}
