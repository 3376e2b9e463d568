package actors

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// recordingInvoker records what the mailbox runs, and fails if two
// messages ever run at once.
type recordingInvoker struct {
	mu        sync.Mutex
	got       []any
	escalated []any
	running   atomic.Int32
	overlap   atomic.Bool
	panicOn   any
}

func (r *recordingInvoker) invoke(msg any) {
	if r.running.Add(1) != 1 {
		r.overlap.Store(true)
	}
	defer r.running.Add(-1)
	r.mu.Lock()
	r.got = append(r.got, msg)
	r.mu.Unlock()
	if r.panicOn != nil && msg == r.panicOn {
		panic("boom")
	}
}

func (r *recordingInvoker) InvokeSystemMessage(msg any) { r.invoke(msg) }
func (r *recordingInvoker) InvokeUserMessage(msg any)   { r.invoke(msg) }
func (r *recordingInvoker) EscalateFailure(reason, msg any) {
	r.mu.Lock()
	r.escalated = append(r.escalated, msg)
	r.mu.Unlock()
}

func (r *recordingInvoker) messages() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]any(nil), r.got...)
}

// heldDispatcher runs a scheduled pass only when told to.
type heldDispatcher struct {
	passes     chan func()
	throughput int
}

func (d *heldDispatcher) Schedule(fn func()) { d.passes <- fn }
func (d *heldDispatcher) Throughput() int    { return d.throughput }

func newHeldMailbox(inv actor.MessageInvoker) (*mailbox, *heldDispatcher) {
	d := &heldDispatcher{passes: make(chan func(), 16), throughput: 300}
	m := &mailbox{}
	m.RegisterHandlers(inv, d)
	m.Start()
	return m, d
}

func TestMailboxSystemFirstAndSuspension(t *testing.T) {
	inv := &recordingInvoker{}
	m, d := newHeldMailbox(inv)
	m.PostUserMessage("a")
	m.PostSystemMessage("s1")
	m.PostUserMessage("b")
	if len(d.passes) != 1 {
		t.Fatalf("%d passes scheduled for three posts, want 1", len(d.passes))
	}
	(<-d.passes)()
	if got := fmt.Sprint(inv.messages()); got != "[s1 a b]" {
		t.Fatalf("ran %s, want [s1 a b]: system messages first, then user messages in order", got)
	}
	if n := m.UserMessageCount(); n != 0 {
		t.Fatalf("%d user messages left", n)
	}

	// Suspended: system messages still run, user messages wait.
	m.PostSystemMessage(&actor.SuspendMailbox{})
	(<-d.passes)()
	m.PostUserMessage("c")
	m.PostSystemMessage("s2")
	(<-d.passes)()
	if got := fmt.Sprint(inv.messages()[3:]); got != "[s2]" {
		t.Fatalf("while suspended ran %s, want [s2]", got)
	}
	if n := m.UserMessageCount(); n != 1 {
		t.Fatalf("%d user messages waiting, want 1", n)
	}
	m.PostSystemMessage(&actor.ResumeMailbox{})
	(<-d.passes)()
	if got := fmt.Sprint(inv.messages()[3:]); got != "[s2 c]" {
		t.Fatalf("after resume ran %s, want [s2 c]", got)
	}
	if len(d.passes) != 0 {
		t.Fatal("a pass scheduled with nothing to run")
	}
}

func TestMailboxEscalatesPanic(t *testing.T) {
	inv := &recordingInvoker{panicOn: "boom"}
	m, d := newHeldMailbox(inv)
	m.PostUserMessage("a")
	m.PostUserMessage("boom")
	m.PostUserMessage("b")
	(<-d.passes)()
	if got := fmt.Sprint(inv.escalated); got != "[boom]" {
		t.Fatalf("escalated %s, want [boom]", got)
	}
	// protoactor suspends the mailbox in EscalateFailure; this invoker
	// does not, so the pass goes on with the next message.
	if got := fmt.Sprint(inv.messages()); got != "[a boom b]" {
		t.Fatalf("ran %s, want [a boom b]", got)
	}
}

// TestMailboxConcurrentPosters: every message of every poster runs, each
// poster's in order, one at a time, on a dispatcher that starts a
// goroutine per pass and yields after two messages.
func TestMailboxConcurrentPosters(t *testing.T) {
	inv := &recordingInvoker{}
	m := &mailbox{}
	m.RegisterHandlers(inv, &goDispatcher{throughput: 2})
	const posters, each = 8, 2000
	var wg sync.WaitGroup
	for p := range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if i%100 == 0 {
					m.PostSystemMessage([2]int{p, -i - 1})
				}
				m.PostUserMessage([2]int{p, i})
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for len(inv.messages()) < posters*(each+each/100) {
		if time.Now().After(deadline) {
			t.Fatalf("ran %d of %d messages", len(inv.messages()), posters*(each+each/100))
		}
		time.Sleep(time.Millisecond)
	}
	if inv.overlap.Load() {
		t.Fatal("two messages ran at once")
	}
	next := make([]int, posters)
	for _, msg := range inv.messages() {
		v := msg.([2]int)
		if v[1] < 0 {
			continue
		}
		if v[1] != next[v[0]] {
			t.Fatalf("poster %d: message %d ran before %d", v[0], v[1], next[v[0]])
		}
		next[v[0]]++
	}
	if cap(m.user.items) > smallQueue {
		t.Fatalf("drained queue kept capacity %d", cap(m.user.items))
	}
}

type goDispatcher struct{ throughput int }

func (d *goDispatcher) Schedule(fn func()) { go fn() }
func (d *goDispatcher) Throughput() int    { return d.throughput }

func TestQueueCompacts(t *testing.T) {
	var q queue
	for i := range 1000 {
		q.push(i)
		q.push(i)
		if v := q.pop(); v != i/2 {
			t.Fatalf("round %d popped %v, want %d", i, v, i/2)
		}
	}
	if q.len() != 1000 {
		t.Fatalf("len %d, want 1000", q.len())
	}
	for i := 500; i < 1000; i++ {
		for range 2 {
			if v := q.pop(); v != i {
				t.Fatalf("popped %v, want %d", v, i)
			}
		}
	}
	if q.pop() != nil || q.len() != 0 {
		t.Fatal("not empty")
	}
	if cap(q.items) > 2000 {
		t.Fatalf("capacity %d for at most 1000 waiting", cap(q.items))
	}
}
