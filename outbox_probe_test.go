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

// hungWatch is a confirming in-memory transport on which chosen recipients
// hang: their envelopes are refused only after delay, as the networked
// transport's delivery timeout does for a peer that accepts a connection
// and never answers. Per recipient it counts the envelopes in flight that
// were published after one of the recipient's had failed.
type hungWatch struct {
	*transport.Memory
	delay time.Duration

	mu       sync.Mutex
	hung     map[string]bool
	failed   map[string]bool // the recipient had a refusal reported
	after    map[string]int  // in flight, published after a refusal
	maxAfter map[string]int
	retries  map[string]int // published after a refusal
}

func newHungWatch(delay time.Duration) *hungWatch {
	return &hungWatch{Memory: transport.NewMemory(transport.MemoryOptions{}), delay: delay,
		hung: map[string]bool{}, failed: map[string]bool{}, after: map[string]int{}, maxAfter: map[string]int{}, retries: map[string]int{}}
}

func (w *hungWatch) setHung(id keys.PublicKey, hung bool) {
	w.mu.Lock()
	w.hung[string(id[:])] = hung
	w.mu.Unlock()
}

func (w *hungWatch) PublishConfirm(env *messages.Envelope, done func(error)) {
	r := string(env.Recipient)
	w.mu.Lock()
	hung, counted := w.hung[r], w.failed[r]
	if counted {
		w.retries[r]++
		w.after[r]++
		w.maxAfter[r] = max(w.maxAfter[r], w.after[r])
	}
	w.mu.Unlock()
	if hung {
		time.AfterFunc(w.delay, func() {
			w.mu.Lock()
			if counted {
				w.after[r]--
			}
			w.failed[r] = true
			w.mu.Unlock()
			done(errors.New("injected: delivery timed out"))
		})
		return
	}
	err := w.Memory.Publish(env)
	if counted {
		w.mu.Lock()
		w.after[r]--
		w.mu.Unlock()
	}
	go done(err)
}

// TestOutboxHungPeerProbes: a peer that hangs (every send to it times out)
// has at most its window in flight until the first timeout, then one send
// at a time, its oldest, offered again on each retry pass; the others'
// sends go on meanwhile. Once it answers, its whole backlog follows. (Before,
// each retry pass published its whole window again, so a hung peer held
// MaxOutboxAhead slots in flight, timeout after timeout.)
func TestOutboxHungPeerProbes(t *testing.T) {
	const ahead, n = 8, 100
	w := newHungWatch(300 * time.Millisecond)
	defer w.Close()
	var in byRecipient
	eng, err := ratchetd.Open(ratchetd.Options{
		Store: persistence.NewMemory(), Transport: w, OutboxRetryInterval: 30 * time.Millisecond, MaxOutboxBackoff: 30 * time.Millisecond,
		MaxOutboxInflight: 32, MaxOutboxAhead: ahead, Handler: in.handle})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	alice, bob, carol := aliceBobCarol(t, eng)
	carolID := carol.Identity()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				out, _, _ := eng.Pending()
				t.Fatalf("%s: bob has %d, carol %d of %d; outbox %d", what, in.count(bob.Identity()), in.count(carolID), n, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	w.setHung(carolID, true)
	published := 0 // carol's sends handed to the transport at once
	for i := range n {
		rep, err := alice.Send(carolID, fmt.Appendf(nil, "m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Queued == 0 {
			published++
		}
	}
	w.mu.Lock()
	early := w.failed[string(carolID[:])] // a slow machine: her lane may be probing already
	w.mu.Unlock()
	if published > ahead || (!early && published != ahead) {
		t.Fatalf("%d of carol's sends were published at once, %d queued; want her window, %d", published, n-published, ahead)
	}
	for i := range n {
		if _, err := alice.Send(bob.Identity(), fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	wait("bob's sends while carol hangs", func() bool { return in.count(bob.Identity()) == n })
	// Several timeouts and retry passes while carol still hangs.
	wait("carol's sends retried", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.retries[string(carolID[:])] >= 4
	})
	w.mu.Lock()
	most := w.maxAfter[string(carolID[:])]
	w.mu.Unlock()
	if most > 1 {
		t.Fatalf("after carol's first timeout %d of her sends were in flight at once; want 1 (a probe)", most)
	}
	if k := in.count(carolID); k != 0 {
		t.Fatalf("carol received %d while hung", k)
	}
	w.setHung(carolID, false)
	wait("carol's backlog", func() bool {
		out, _, _ := eng.Pending()
		return in.count(carolID) == n && out == 0
	})
}

// outboxScans counts the scans of an installation's outbox.
type outboxScans struct {
	persistence.Store
	n atomic.Int64
}

func (s *outboxScans) Scan(prefix []byte, fn func(k, v []byte) error) error {
	if len(prefix) > 1 && prefix[0] == 'o' { // an installation's outbox, not a count of all
		s.n.Add(1)
	}
	return s.Store.Scan(prefix, fn)
}

// hungRig is an engine on a hungWatch whose alice sent n messages to
// carol while carol hangs.
type hungRig struct {
	t            *testing.T
	w            *hungWatch
	eng          *ratchetd.Engine
	alice, carol *ratchetd.Account
	in           byRecipient
	n            int
}

// newHungRig opens an engine with o (Store, Transport and Handler are
// set here; Store only if o has none) and sends n messages to a hung carol.
func newHungRig(t *testing.T, hang time.Duration, o ratchetd.Options, n int) *hungRig {
	t.Helper()
	r := &hungRig{t: t, w: newHungWatch(hang), n: n}
	t.Cleanup(func() { r.w.Close() })
	if o.Store == nil {
		o.Store = persistence.NewMemory()
	}
	o.Transport, o.Handler = r.w, r.in.handle
	o.MaxOutboxInflight, o.MaxOutboxAhead = 32, 8
	eng, err := ratchetd.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	r.eng = eng
	r.alice, _, r.carol = aliceBobCarol(t, eng)
	r.w.setHung(r.carol.Identity(), true)
	for i := range n {
		if _, err := r.alice.Send(r.carol.Identity(), fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// retries counts carol's publications after one of hers failed.
func (r *hungRig) retries() int {
	id := r.carol.Identity()
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	return r.w.retries[string(id[:])]
}

func (r *hungRig) received() int { return r.in.count(r.carol.Identity()) }

// waitUntil fails the test if cond does not hold within 30 s.
func (r *hungRig) waitUntil(what string, cond func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: carol has %d of %d, %d retries", what, r.received(), r.n, r.retries())
		}
	}
}

// back lets carol answer and waits for her whole backlog.
func (r *hungRig) back() {
	r.t.Helper()
	r.w.setHung(r.carol.Identity(), false)
	r.waitUntil("carol's backlog", func() bool {
		out, _, _ := r.eng.Pending()
		return r.received() == r.n && out == 0
	})
}

// TestOutboxProbeReadsNoBacklog: while a peer hangs with a backlog, a retry
// pass reads its probe by key; it does not scan the outbox, whose records
// of that peer it could not send anyway. (Before, every retry pass, each
// OutboxRetryInterval, read and decoded the whole outbox: with a peer down
// for a day, millions of records every 2 s.) At least one pass in 150 still
// reads everything.
func TestOutboxProbeReadsNoBacklog(t *testing.T) {
	store := &outboxScans{Store: persistence.NewMemory()}
	r := newHungRig(t, 40*time.Millisecond, ratchetd.Options{Store: store,
		OutboxRetryInterval: 20 * time.Millisecond, MaxOutboxBackoff: 20 * time.Millisecond}, 300)
	r.waitUntil("carol probed", func() bool { return r.retries() >= 2 })
	scans, from, start := store.n.Load(), r.retries(), time.Now()
	r.waitUntil("more probes", func() bool { return r.retries() >= from+8 })
	probes, scanned := r.retries()-from, store.n.Load()-scans
	// A sweep (at most every 150 passes) may fall among them; more would
	// be scans by the passes.
	if sweeps := 1 + int64(time.Since(start)/(150*20*time.Millisecond)); scanned > sweeps {
		t.Fatalf("%d outbox scans during %d probes; want at most the sweeps, %d", scanned, probes, sweeps)
	}
	t.Logf("%d outbox scans during %d probes", scanned, probes)
	r.back()
}

// TestOutboxProbeBacksOff: the wait between two probes of a peer that
// stays down is OutboxRetryInterval five times, then doubles with each
// failure, up to MaxOutboxBackoff; once the peer answers, the backlog
// follows within that bound.
func TestOutboxProbeBacksOff(t *testing.T) {
	const interval, backoff = 10 * time.Millisecond, 200 * time.Millisecond
	r := newHungRig(t, time.Millisecond, ratchetd.Options{OutboxRetryInterval: interval, MaxOutboxBackoff: backoff}, 20)
	// Waits of 10 ms five times, 20, 40, 80, 160, then 200 ms: about 16
	// probes in 1.5 s, where a probe every pass would be about 150. A slow
	// machine only makes fewer.
	time.Sleep(1500 * time.Millisecond)
	if k := r.retries(); k > 22 || k < 2 {
		t.Fatalf("%d probes in 1.5 s with waits doubling from %v to %v; want about 16", k, interval, backoff)
	}
	t.Logf("%d probes in 1.5 s", r.retries())
	r.back()
}

// TestOutboxPeerSeenEndsBackoff: a signed envelope from a peer whose lane
// is backing off shows it is online: its probe goes at the next pass, not
// at the end of its wait. The clock is frozen, so no wait ever ends by
// itself.
func TestOutboxPeerSeenEndsBackoff(t *testing.T) {
	frozen := time.Now()
	r := newHungRig(t, time.Millisecond, ratchetd.Options{Clock: func() time.Time { return frozen },
		OutboxRetryInterval: 10 * time.Millisecond}, 20)
	carolID := r.carol.Identity()
	r.waitUntil("a send to carol failing", func() bool {
		r.w.mu.Lock()
		defer r.w.mu.Unlock()
		return r.w.failed[string(carolID[:])]
	})
	r.w.setHung(carolID, false)
	time.Sleep(200 * time.Millisecond) // twenty passes: none may probe yet
	if k := r.received(); k != 0 {
		t.Fatalf("carol received %d while alice's lane to her waits on a frozen clock", k)
	}
	if _, err := r.carol.Send(r.alice.Identity(), []byte("back")); err != nil {
		t.Fatal(err)
	}
	r.waitUntil("carol's backlog after she wrote to alice", func() bool { return r.received() == r.n })
}
