package ratchetd_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// failingPublish is an in-memory transport (which does not confirm
// delivery) whose Publish fails while fail is set.
type failingPublish struct {
	*transport.Memory
	fail atomic.Bool
}

func (f *failingPublish) Publish(env *messages.Envelope) error {
	if f.fail.Load() {
		return errors.New("injected publish failure")
	}
	return f.Memory.Publish(env)
}

// TestNonConfirmingOutboxBacklog: with a transport that does not confirm
// delivery, sends whose Publish failed wait in the outbox; once the
// transport works again every one of them is published, however many (an
// outbox pass reads a few windows at a time and goes on until the end).
// (Found by review: only the first 1 024 left.)
func TestNonConfirmingOutboxBacklog(t *testing.T) {
	r := newRefusing(t, persistence.NewMemory())
	r.tr.fail.Store(true)
	const n = 1500
	for i := range n {
		// Accepted, not an error: kept in the outbox.
		rep, err := r.alice.Send(r.bob.Identity(), []byte(fmt.Sprintf("m%d", i)))
		if err != nil || rep.Envelopes != 1 || rep.Queued != 1 {
			t.Fatalf("send %d while the transport refuses: %+v, %v; want 1 envelope, queued, no error", i, rep, err)
		}
	}
	if out, _, _ := r.eng.Pending(); out != n {
		t.Fatalf("outbox holds %d records after %d failed publishes", out, n)
	}
	r.tr.fail.Store(false)
	r.drained(n, 30*time.Second)
}

// refusing is an engine on a failingPublish transport with alice and bob
// introduced; what bob receives is counted.
type refusing struct {
	t          *testing.T
	tr         *failingPublish
	eng        *ratchetd.Engine
	alice, bob *ratchetd.Account
	in         byRecipient
}

func newRefusing(t *testing.T, store persistence.Store) *refusing {
	t.Helper()
	r := &refusing{t: t, tr: &failingPublish{Memory: transport.NewMemory(transport.MemoryOptions{})}}
	t.Cleanup(func() { r.tr.Close() })
	eng, err := ratchetd.Open(ratchetd.Options{Store: store, Transport: r.tr, OutboxRetryInterval: 200 * time.Millisecond, Handler: r.in.handle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	r.eng = eng
	r.alice, _ = eng.CreateAccount()
	r.bob, _ = eng.CreateAccount()
	introduce(t, r.alice, r.bob)
	introduce(t, r.bob, r.alice)
	return r
}

// drained waits until bob received n messages and alice's outbox is empty.
func (r *refusing) drained(n int, within time.Duration) {
	r.t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		k := r.in.count(r.bob.Identity())
		out, _, _ := r.eng.Pending()
		if k == n && out == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("bob received %d of %d; outbox holds %d", k, n, out)
		}
	}
}

// flakyConfirm is an in-memory transport that confirms delivery
// (transport.Confirmer), and refuses chosen envelopes on their first offer,
// slowly, as a node that timed out would.
type flakyConfirm struct {
	*transport.Memory
	refuse func(env *messages.Envelope) bool
	delay  time.Duration
}

func (f *flakyConfirm) PublishConfirm(env *messages.Envelope, done func(error)) {
	if f.refuse(env) {
		time.AfterFunc(f.delay, func() { done(errors.New("injected: not acknowledged")) })
		return
	}
	err := f.Memory.Publish(env)
	go done(err)
}

// TestOutboxRetryIsNotOvertaken: a send refused once is offered again
// while later sends to the same peer go on. If the later ones may run
// ahead without bound, the receiver, which keeps skipped keys only for its
// last MaxKeep messages (status-compat.md §6.5), has dropped the key of the
// refused one by the time it comes again: it is confirmed as undecryptable
// and lost. (Found by TestReviewSigtermUnderLoadLosesMessages, which lost
// a run of 33 to 61 messages in about one run of 20.)
func TestOutboxRetryIsNotOvertaken(t *testing.T) {
	mem := transport.NewMemory(transport.MemoryOptions{})
	defer mem.Close()
	var offered sync.Map // envelope signature -> offered before
	var count atomic.Int64
	tr := &flakyConfirm{Memory: mem, delay: 50 * time.Millisecond}
	var mu sync.Mutex
	got := map[string]bool{}
	eng, err := ratchetd.Open(ratchetd.Options{
		Store: persistence.NewMemory(), Transport: tr, OutboxRetryInterval: 300 * time.Millisecond,
		Limits: ratchetd.Limits{Ratchet: ratchet.Limits{MaxKeep: 400}},
		Handler: func(m ratchetd.Message) {
			mu.Lock()
			got[string(m.Payload)] = true
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	alice, _ := eng.CreateAccount()
	bob, _ := eng.CreateAccount()
	introduce(t, alice, bob)
	introduce(t, bob, alice)
	bobID := bob.Identity()
	tr.refuse = func(env *messages.Envelope) bool {
		if string(env.Recipient) != string(bobID[:]) {
			return false
		}
		if _, again := offered.LoadOrStore(string(env.Signature), true); again {
			return false
		}
		n := count.Add(1)
		return n > 100 && n <= 110
	}
	const n = 3000
	for i := range n {
		if _, err := alice.Send(bobID, []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Confirmed is not yet handled (the memory transport delivers after it
	// confirmed): once the outbox is empty, what has not arrived a little
	// later is lost.
	deadline := time.Now().Add(30 * time.Second)
	var drained time.Time
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k == n {
			return
		}
		if out, _, _ := eng.Pending(); out == 0 && drained.IsZero() {
			drained = time.Now()
		}
		if time.Now().After(deadline) || (!drained.IsZero() && time.Since(drained) > time.Second) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var missing []string
	mu.Lock()
	for i := range n {
		if p := fmt.Sprintf("m%d", i); !got[p] {
			missing = append(missing, p)
		}
	}
	mu.Unlock()
	out, _, _ := eng.Pending()
	t.Fatalf("outbox holds %d records; bob did not receive %d of %d: %v (stats %+v)", out, len(missing), n, missing, eng.Stats())
}

// byRecipient records the payloads each recipient identity received.
type byRecipient struct {
	mu  sync.Mutex
	got map[keys.PublicKey]map[string]bool
}

func (b *byRecipient) handle(m ratchetd.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got == nil {
		b.got = map[keys.PublicKey]map[string]bool{}
	}
	if b.got[m.Recipient] == nil {
		b.got[m.Recipient] = map[string]bool{}
	}
	b.got[m.Recipient][string(m.Payload)] = true
}

func (b *byRecipient) count(id keys.PublicKey) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.got[id])
}

// aliceBobCarol makes three accounts, alice introduced to bob and to carol
// both ways.
func aliceBobCarol(t *testing.T, eng *ratchetd.Engine) (alice, bob, carol *ratchetd.Account) {
	t.Helper()
	alice, _ = eng.CreateAccount()
	bob, _ = eng.CreateAccount()
	carol, _ = eng.CreateAccount()
	introduce(t, alice, bob)
	introduce(t, bob, alice)
	introduce(t, alice, carol)
	introduce(t, carol, alice)
	return alice, bob, carol
}

// laneWatch is a confirming in-memory transport on which chosen recipients
// are down (their envelopes are refused, after a short delay). Per
// recipient it measures how far publication ran ahead of the oldest
// envelope not yet confirmed.
type laneWatch struct {
	*transport.Memory
	mu       sync.Mutex
	down     map[string]bool
	order    map[string][]string // recipient -> signatures, first publication order
	done     map[string]bool     // confirmed signatures
	maxAhead int
}

func (w *laneWatch) setDown(id keys.PublicKey, down bool) {
	w.mu.Lock()
	w.down[string(id[:])] = down
	w.mu.Unlock()
}

func (w *laneWatch) PublishConfirm(env *messages.Envelope, done func(error)) {
	r, sig := string(env.Recipient), string(env.Signature)
	w.mu.Lock()
	if !slices.Contains(w.order[r], sig) {
		w.order[r] = append(w.order[r], sig)
	}
	first := slices.IndexFunc(w.order[r], func(s string) bool { return !w.done[s] })
	if first >= 0 {
		w.maxAhead = max(w.maxAhead, len(w.order[r])-first)
	}
	down := w.down[r]
	w.mu.Unlock()
	if down {
		time.AfterFunc(5*time.Millisecond, func() { done(errors.New("injected: peer down")) })
		return
	}
	err := w.Memory.Publish(env)
	if err == nil {
		w.mu.Lock()
		w.done[sig] = true
		w.mu.Unlock()
	}
	go done(err)
}

// TestOutboxLanes: a peer that is down holds up only its own sends; the
// others go on. Its sends wait in the outbox and are offered oldest first,
// never more than MaxOutboxAhead past the oldest unconfirmed one, so once
// it is back every one of them decrypts although the receiver keeps
// skipped keys only for its last 100 messages (MaxKeep).
func TestOutboxLanes(t *testing.T) {
	const ahead, n = 16, 1200
	w := &laneWatch{Memory: transport.NewMemory(transport.MemoryOptions{}), down: map[string]bool{}, order: map[string][]string{}, done: map[string]bool{}}
	defer w.Close()
	var in byRecipient
	eng, err := ratchetd.Open(ratchetd.Options{
		Store: persistence.NewMemory(), Transport: w, OutboxRetryInterval: 100 * time.Millisecond,
		MaxOutboxInflight: 24, MaxOutboxAhead: ahead,
		Limits:  ratchetd.Limits{Ratchet: ratchet.Limits{MaxKeep: 100}},
		Handler: in.handle})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	alice, bob, carol := aliceBobCarol(t, eng)
	received := func(who *ratchetd.Account) int { return in.count(who.Identity()) }
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				out, _, _ := eng.Pending()
				t.Fatalf("%s: bob has %d, carol %d of %d; outbox %d", what, received(bob), received(carol), n, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	w.setDown(carol.Identity(), true)
	for i := range n {
		for _, to := range []*ratchetd.Account{carol, bob} {
			if _, err := alice.Send(to.Identity(), []byte(fmt.Sprintf("m%d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait("bob's sends while carol is down", func() bool { return received(bob) == n })
	if k := received(carol); k != 0 {
		t.Fatalf("carol received %d while down", k)
	}
	w.setDown(carol.Identity(), false)
	wait("carol's backlog", func() bool {
		out, _, _ := eng.Pending()
		return received(carol) == n && out == 0
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.maxAhead > ahead {
		t.Fatalf("a recipient's sends ran %d past its oldest unconfirmed one; MaxOutboxAhead is %d", w.maxAhead, ahead)
	}
	t.Logf("at most %d published ahead of the oldest unconfirmed send (limit %d)", w.maxAhead, ahead)
}

// TestOutboxLanesAfterRestart: a restarted engine knows nothing of its
// lanes' windows; it reads the outbox oldest first, and a peer's backlog
// still never runs more than MaxOutboxAhead past its oldest unconfirmed
// send.
func TestOutboxLanesAfterRestart(t *testing.T) {
	const ahead, n = 16, 500
	w := &laneWatch{Memory: transport.NewMemory(transport.MemoryOptions{}), down: map[string]bool{}, order: map[string][]string{}, done: map[string]bool{}}
	defer w.Close()
	store := persistence.NewMemory()
	var in byRecipient
	open := func() *ratchetd.Engine {
		eng, err := ratchetd.Open(ratchetd.Options{
			Store: store, Transport: w, OutboxRetryInterval: 100 * time.Millisecond,
			MaxOutboxInflight: 24, MaxOutboxAhead: ahead,
			Limits:  ratchetd.Limits{Ratchet: ratchet.Limits{MaxKeep: 100}},
			Handler: in.handle})
		if err != nil {
			t.Fatal(err)
		}
		return eng
	}
	received := in.count
	eng := open()
	alice, bob, carol := aliceBobCarol(t, eng)
	bobID, carolID := bob.Identity(), carol.Identity()
	w.setDown(carolID, true)
	for i := range n {
		for _, to := range []keys.PublicKey{carolID, bobID} {
			if _, err := alice.Send(to, []byte(fmt.Sprintf("m%d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for received(bobID) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	eng.Close()
	eng = open()
	defer eng.Close()
	time.Sleep(300 * time.Millisecond) // a few passes while carol is still down
	w.setDown(carolID, false)
	for {
		out, _, _ := eng.Pending()
		if received(carolID) == n && out == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob has %d, carol %d of %d; outbox %d", received(bobID), received(carolID), n, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.maxAhead > ahead {
		t.Fatalf("a recipient's sends ran %d past its oldest unconfirmed one; MaxOutboxAhead is %d", w.maxAhead, ahead)
	}
}

// scanFails fails the next outbox scans (a store I/O error).
type scanFails struct {
	persistence.Store
	next atomic.Int64
}

func (s *scanFails) Scan(prefix []byte, fn func(k, v []byte) error) error {
	if len(prefix) > 1 && prefix[0] == 'o' && s.next.Add(-1) >= 0 { // an installation's outbox, not a count of all
		return errors.New("injected scan failure")
	}
	return s.Store.Scan(prefix, fn)
}

// TestNonConfirmingOutboxScanError: an outbox pass whose scan fails leaves
// the outbox as it is, new sends still queue behind it, and a later pass
// publishes everything. (The first version of the ordered outbox took a
// failed scan for an empty outbox: the sends it held were never published.)
func TestNonConfirmingOutboxScanError(t *testing.T) {
	store := &scanFails{Store: persistence.NewMemory()}
	r := newRefusing(t, store)
	r.tr.fail.Store(true)
	const n = 60
	for i := range n / 2 {
		r.alice.Send(r.bob.Identity(), []byte(fmt.Sprintf("m%d", i))) // kept in the outbox
	}
	store.next.Store(1) // the first pass fails to read the outbox
	r.tr.fail.Store(false)
	for i := n / 2; i < n; i++ {
		r.alice.Send(r.bob.Identity(), []byte(fmt.Sprintf("m%d", i))) // behind the others
	}
	r.drained(n, 10*time.Second)
}
