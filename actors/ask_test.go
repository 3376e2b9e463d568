package actors

import (
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// echoer answers every int with the same int, except those it is told to
// drop; it can answer a dropped one later (a late reply).
type echoer struct {
	drop  map[int]bool
	late  []late
	reply chan struct{}
}

type late struct {
	to *actor.PID
	n  int
}

type answerLate struct{}

func (e *echoer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case int:
		if e.drop[m] {
			e.late = append(e.late, late{ctx.Sender(), m})
			return
		}
		ctx.Respond(m)
	case answerLate:
		for _, l := range e.late {
			ctx.Send(l.to, l.n)
		}
		e.late = nil
	}
}

// asker asks the echoer for each int it is sent, through asks, and reports
// each continuation's outcome.
type asker struct {
	a       asks
	echo    *actor.PID
	timeout time.Duration
	out     chan<- outcome
}

type outcome struct {
	asked int
	got   any
	err   error
}

type slotsQuery struct{ reply chan int }

func (k *asker) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case int:
		ctx.RequestWithCustomSender(k.echo, m, k.a.ask(ctx, k.timeout, func(res any, err error) { k.out <- outcome{m, res, err} }))
	case *askReply:
		k.a.replied(m)
	case *askSweep:
		k.a.sweep(ctx, k.timeout)
	case slotsQuery:
		m.reply <- len(k.a.free) + len(k.a.pending)
	case *actor.Stopped:
		k.a.release(ctx)
	}
}

func TestAsksRouteRepliesAndTimeOut(t *testing.T) {
	sys := actor.NewActorSystem()
	echo := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &echoer{drop: map[int]bool{7: true}} }))
	out := make(chan outcome, 100)
	const timeout = 400 * time.Millisecond
	k := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &asker{echo: echo, timeout: timeout, out: out} }))

	// Many asks in flight at once: each continuation gets its own reply.
	for i := range 50 {
		if i != 7 {
			sys.Root.Send(k, i)
		}
	}
	got := map[int]bool{}
	for range 49 {
		o := <-out
		if o.err != nil || o.got != o.asked {
			t.Fatalf("ask %d: got %v, %v", o.asked, o.got, o.err)
		}
		got[o.asked] = true
	}
	if len(got) != 49 {
		t.Fatalf("answered %d distinct asks, want 49", len(got))
	}
	// An unanswered ask (on a reused slot, whose PID the echoer has
	// already replied to) times out, once.
	sys.Root.Send(k, 7)
	select {
	case o := <-out:
		if o.asked != 7 || o.err != ErrTimeout {
			t.Fatalf("overdue ask: %+v", o)
		}
	case <-time.After(3 * timeout):
		t.Fatal("the unanswered ask never timed out")
	}
	// Its late reply is dropped, and does not reach the next ask.
	sys.Root.Send(echo, answerLate{})
	sys.Root.Send(k, 100)
	if o := <-out; o.asked != 100 || o.got != 100 || o.err != nil {
		t.Fatalf("ask after a late reply: %+v", o)
	}
	select {
	case o := <-out:
		t.Fatalf("a late reply ran a continuation: %+v", o)
	case <-time.After(100 * time.Millisecond):
	}
	// Idle, the asker releases its slots.
	deadline := time.Now().Add(3 * timeout)
	for {
		q := slotsQuery{make(chan int, 1)}
		sys.Root.Send(k, q)
		if <-q.reply == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle asker kept its reply slots")
		}
		time.Sleep(timeout / 8)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = sys.Root.StopFuture(k).Wait() }()
	wg.Wait()
}

// TestAsksReleaseFailsPending: an asker that stops with asks pending fails
// them at once (ErrClosed) instead of leaving them to wait for a reply
// nobody will see: a transport's delivery waited on one for RequestTimeout,
// and a node's Close with it (a graceful stop of serve under load took
// 5 s, the node's DeliverTimeout).
func TestAsksReleaseFailsPending(t *testing.T) {
	sys := actor.NewActorSystem()
	echo := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &echoer{drop: map[int]bool{1: true, 2: true}} }))
	out := make(chan outcome, 10)
	k := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &asker{echo: echo, timeout: time.Hour, out: out} }))
	sys.Root.Send(k, 1)
	sys.Root.Send(k, 2)
	q := slotsQuery{make(chan int, 1)}
	sys.Root.Send(k, q)
	if n := <-q.reply; n != 2 {
		t.Fatalf("%d slots in use, want the 2 unanswered asks", n)
	}
	_ = sys.Root.StopFuture(k).Wait()
	for range 2 {
		select {
		case o := <-out:
			if o.err != ErrClosed {
				t.Fatalf("ask %d ended with %v, want ErrClosed", o.asked, o.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a pending ask was not failed when its asker stopped")
		}
	}
}

// TestAsksDeadReceiverIsClosed: an ask whose receiver has stopped gets
// protoactor's DeadLetterResponse; the continuation sees ErrClosed, not a
// reply of an unexpected type (which the Installation took for a timeout:
// a decrypt counted as a failure).
func TestAsksDeadReceiverIsClosed(t *testing.T) {
	sys := actor.NewActorSystem()
	echo := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &echoer{} }))
	_ = sys.Root.StopFuture(echo).Wait()
	out := make(chan outcome, 1)
	k := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &asker{echo: echo, timeout: time.Hour, out: out} }))
	defer sys.Root.Stop(k)
	sys.Root.Send(k, 7)
	select {
	case o := <-out:
		if o.err != ErrClosed || o.got != nil {
			t.Fatalf("an ask to a stopped actor ended with (%v, %v), want (nil, ErrClosed)", o.got, o.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an ask to a stopped actor was never answered")
	}
}
