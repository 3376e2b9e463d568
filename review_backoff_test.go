package ratchetd_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// bkGate is a confirming in-memory transport on which a recipient may be
// held: its envelopes are neither delivered nor refused until the test
// calls fail, which refuses every one held (a delivery timeout, at the
// moment the test chooses). It counts the publications per recipient.
type bkGate struct {
	*transport.Memory
	mu   sync.Mutex
	hold map[string]bool
	held []func()
	pubs map[string]int
}

func newBkGate() *bkGate {
	return &bkGate{Memory: transport.NewMemory(transport.MemoryOptions{}), hold: map[string]bool{}, pubs: map[string]int{}}
}

func (g *bkGate) setHold(id keys.PublicKey, on bool) {
	g.mu.Lock()
	g.hold[string(id[:])] = on
	g.mu.Unlock()
}

func (g *bkGate) published(id keys.PublicKey) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pubs[string(id[:])]
}

// fail refuses every envelope held so far; done is called before fail
// returns, so the installation has the results queued in its mailbox.
func (g *bkGate) fail() {
	g.mu.Lock()
	h := g.held
	g.held = nil
	g.mu.Unlock()
	for _, f := range h {
		f()
	}
}

func (g *bkGate) PublishConfirm(env *messages.Envelope, done func(error)) {
	r := string(env.Recipient)
	g.mu.Lock()
	g.pubs[r]++
	if g.hold[r] {
		g.held = append(g.held, func() { done(errors.New("injected: delivery timed out")) })
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	err := g.Memory.Publish(env)
	go done(err)
}

type bkRig struct {
	t            *testing.T
	g            *bkGate
	eng          *ratchetd.Engine
	alice, carol *ratchetd.Account
	in           byRecipient
	n            int
}

// newBkRig opens an engine on a bkGate and sends n messages from alice to
// carol, all held (published, not answered yet).
func newBkRig(t *testing.T, o ratchetd.Options, n int) *bkRig {
	t.Helper()
	r := &bkRig{t: t, g: newBkGate(), n: n}
	t.Cleanup(func() { r.g.Close() })
	o.Store, o.Transport, o.Handler = persistence.NewMemory(), r.g, r.in.handle
	o.MaxOutboxInflight, o.MaxOutboxAhead = 32, 8
	eng, err := ratchetd.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	r.eng = eng
	r.alice, _, r.carol = aliceBobCarol(t, eng)
	r.g.setHold(r.carol.Identity(), true)
	for i := range n {
		if _, err := r.alice.Send(r.carol.Identity(), fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	r.waitUntil("alice's window to carol published", func() bool { return r.g.published(r.carol.Identity()) == n })
	return r
}

func (r *bkRig) received() int { return r.in.count(r.carol.Identity()) }

func (r *bkRig) waitUntil(what string, cond func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: carol has %d of %d, %d publications to her", what, r.received(), r.n, r.g.published(r.carol.Identity()))
		}
	}
}

// barrier returns once alice's installation has handled every message
// queued to it before (its mailbox is FIFO): the results fail queued.
func (r *bkRig) barrier() {
	r.t.Helper()
	if _, err := r.alice.Devices(r.carol.Identity()); err != nil {
		r.t.Fatal(err)
	}
}

// carolWrites sends one message from carol to alice and waits until alice
// handled it (peerSeen runs before the Handler is called).
func (r *bkRig) carolWrites(p string) {
	r.t.Helper()
	before := r.in.count(r.alice.Identity())
	if _, err := r.carol.Send(r.alice.Identity(), []byte(p)); err != nil {
		r.t.Fatal(err)
	}
	r.waitUntil("alice received "+p, func() bool { return r.in.count(r.alice.Identity()) > before })
}

// TestReviewBackoffPeerSeenDuringProbe: carol writes to alice while alice's
// probe to her is in flight (sent to a connection that will time out, as
// the node's DeliverTimeout does for 5 s). peerSeen does nothing then (the
// lane is "due"), so when that probe fails the lane waits its whole
// backoff again: the message that showed carol is online is forgotten. The
// frozen clock stands for a long backoff (after a few failures, up to
// MaxOutboxBackoff, 1 min), as in TestOutboxPeerSeenEndsBackoff: no wait
// ends by itself.
func TestReviewBackoffPeerSeenDuringProbe(t *testing.T) {
	frozen := time.Now()
	r := newBkRig(t, ratchetd.Options{Clock: func() time.Time { return frozen }, OutboxRetryInterval: 10 * time.Millisecond}, 5)
	carolID := r.carol.Identity()
	r.g.fail() // the window times out: the lane fails and backs off
	r.barrier()
	time.Sleep(100 * time.Millisecond) // ten passes
	if k := r.g.published(carolID); k != r.n {
		t.Fatalf("%d publications to carol on a frozen clock; want %d (no probe before she is seen)", k, r.n)
	}
	r.carolWrites("hello") // the wait ends: the next pass probes
	r.waitUntil("alice's probe to carol", func() bool { return r.g.published(carolID) == r.n+1 })
	// The probe hangs. Carol writes again while it is out: she is online.
	r.carolWrites("still here")
	// She answers from now on; the probe sent before times out.
	r.g.setHold(carolID, false)
	r.g.fail()
	r.waitUntil("carol's backlog after she wrote to alice during the probe", func() bool { return r.received() == r.n })
}

// TestReviewBackoffClockStepsBack: MaxOutboxBackoff is documented as the
// bound of the wait between two probes, but the wait is a time on the
// injected Clock (probeAt) while the passes run on real timers: a Clock
// that steps back (a wall clock corrected by an hour) after a failure
// leaves the lane without a probe for that hour plus its backoff. Here the
// backoff is 50 ms; carol is back and never gets her messages.
func TestReviewBackoffClockStepsBack(t *testing.T) {
	var ahead atomic.Pointer[time.Time] // set: the clock reads this (an hour fast, frozen)
	clock := func() time.Time {
		if p := ahead.Load(); p != nil {
			return *p
		}
		return time.Now()
	}
	r := newBkRig(t, ratchetd.Options{Clock: clock, OutboxRetryInterval: 10 * time.Millisecond, MaxOutboxBackoff: 50 * time.Millisecond}, 5)
	carolID := r.carol.Identity()
	fast := time.Now().Add(time.Hour)
	ahead.Store(&fast)
	r.g.setHold(carolID, false) // carol is back for every later publication
	r.g.fail()                  // the window fails while the clock is an hour fast
	r.barrier()
	ahead.Store(nil) // the clock is corrected
	r.waitUntil("carol's backlog with a 50 ms MaxOutboxBackoff after the clock stepped back", func() bool { return r.received() == r.n })
}
