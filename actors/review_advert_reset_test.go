package actors

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// staleOf lists the Stale flag of b's stored sessions with a.
func (r *lateRig) staleOf() []bool {
	var out []bool
	for _, rec := range r.storedSessions() {
		out = append(out, rec.Stale)
	}
	return out
}

// TestReviewAdvertTakenBeforeStaleMarkDurable: the advert is kept in its
// sender's outbox until the receiving node confirms it, but on 8dd1ddd
// receiveDH answered Processed{} as soon as it had forwarded ResetSending,
// before the PeerSession had committed the stale mark. A store that did not
// answer (or refused) that one commit, or a kill -9 meanwhile, lost the
// reset although the advert was taken (the sender deletes its record, and
// is rate-limited). Now the advert is not taken until the mark is durable,
// and taken when it is offered again.
func TestReviewAdvertTakenBeforeStaleMarkDurable(t *testing.T) {
	r := newLateRig(t)
	if err := r.handler()(r.send("hello")); err != nil {
		t.Fatalf("hello: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if s := r.staleOf(); len(s) != 1 || s[0] {
		t.Fatalf("b's sessions with a before the advert: %v", s)
	}
	d := r.advertOf()
	r.store.armed.Store(true) // the next commit (the stale mark) hangs
	took := r.handler()(d)
	staleWhenTaken := r.staleOf()
	// The hanging commit is refused (a store failure; or the process dies).
	r.releaseWith(true)
	time.Sleep(500 * time.Millisecond)
	r.store.refuse.Store(false)
	if took == nil && (len(staleWhenTaken) != 1 || !staleWhenTaken[0]) {
		t.Errorf("b took a's advert (the transport confirms it, a's outbox drops it) while its stale mark was not durable: stored stale=%v", staleWhenTaken)
	}
	// b hosted again: is the reset there?
	if err := r.e.StopInstallation(r.b); err != nil {
		t.Fatal(err)
	}
	if _, err := r.e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
	if took == nil {
		if s := r.staleOf(); len(s) != 1 || !s[0] {
			t.Errorf("after the stale mark's commit failed and b was hosted again: stored stale=%v; the advert was taken (err=nil) and is never offered again, so b keeps sending on the session a cannot use", s)
		}
		return
	}
	// Not taken: the sender's outbox offers it again.
	if err := r.handler()(d); err != nil {
		t.Fatalf("the advert offered again: %v", err)
	}
	if s := r.staleOf(); len(s) != 1 || !s[0] {
		t.Errorf("the advert offered again was taken, but stored stale=%v", s)
	}
}

// advertOf has a advertise its bundle to b and returns the delivery.
func (r *lateRig) advertOf() transport.Delivery {
	r.t.Helper()
	res, err := r.e.Request(r.a, &messages.SendCommand{PeerIdentity: r.bID[:], Advertise: true})
	if rep, _ := res.(*messages.SendReport); err != nil || rep == nil || rep.Error != messages.ErrorCode_OK {
		r.t.Fatalf("advert: %v %v", res, err)
	}
	env := r.tr.DropOne()
	if env == nil {
		r.t.Fatal("no advert in the transport")
	}
	d, err := transport.Open(env, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return d
}

// TestReviewAdvertMarkFailedOnResetIsNotWantedAgain: on c004485 the
// ResetSending path answered STORE when markStale's commit failed, but did
// not keep staleWanted (ready() did, since d729fe8). With a transport that does not
// confirm (transport.Memory here; staleNow says such a transport never
// offers the advert again) the reset is then lost: the session's next
// commit writes stale=false, and b hosted again sends on it.
func TestReviewAdvertMarkFailedOnResetIsNotWantedAgain(t *testing.T) {
	r := newLateRig(t)
	if err := r.handler()(r.send("hello")); err != nil {
		t.Fatalf("hello: %v", err)
	}
	after := r.send("after") // sealed now: a's advert below does not touch a's sessions
	d := r.advertOf()
	r.store.refuse.Store(true) // the stale mark's commit fails (refused at once)
	took := r.handler()(d)
	r.store.refuse.Store(false)
	if took == nil {
		t.Fatalf("advert taken although the mark's commit was refused")
	}
	t.Logf("advert not taken: %v", took)
	// The store works again; a's next message reaches the same session.
	if err := r.handler()(after); err != nil {
		t.Fatalf("after: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if s := r.staleOf(); len(s) != 1 || !s[0] {
		t.Errorf("after the refused stale mark and a later successful commit of the same session: stored stale=%v (the session did not keep the mark wanted; a non-confirming transport never offers the advert again)", s)
	}
	if err := r.e.StopInstallation(r.b); err != nil {
		t.Fatal(err)
	}
	if _, err := r.e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
	x3dh := r.e.Stats().X3DHActive
	res, err := r.e.Request(r.b, &messages.SendCommand{PeerIdentity: r.aID[:], Payload: []byte("from b")})
	rep, _ := res.(*messages.SendReport)
	if err != nil || rep == nil {
		t.Fatalf("b's send: %v %v", res, err)
	}
	if n := r.e.Stats().X3DHActive - x3dh; n == 0 {
		t.Errorf("b hosted again sent on the session a asked to reset (no new X3DH; report %v)", rep)
	}
}

// TestReviewAdvertAdvertWithoutSessionsIsTaken: an advert from an identity b
// has no session with is answered at once (no future, no session).
func TestReviewAdvertAdvertWithoutSessionsIsTaken(t *testing.T) {
	r := newLateRig(t)
	d := r.advertOf()
	start := time.Now()
	if err := r.handler()(d); err != nil {
		t.Fatalf("advert with no sessions: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("advert with no sessions answered after %v", el)
	}
	if st := r.e.Stats(); st.SessionsActive != 0 {
		t.Errorf("an advert with no sessions spawned %d sessions", st.SessionsActive)
	}
}

// TestReviewAdvertAdvertTwiceTakenBoth: the same advert offered twice (a
// re-offer, or a replay: adverts are not recorded in the replay cache) is
// taken both times, answered once each.
func TestReviewAdvertAdvertTwiceTakenBoth(t *testing.T) {
	r := newLateRig(t)
	if err := r.handler()(r.send("hello")); err != nil {
		t.Fatalf("hello: %v", err)
	}
	d := r.advertOf()
	for i := 0; i < 3; i++ {
		start := time.Now()
		if err := r.handler()(d); err != nil {
			t.Fatalf("advert #%d: %v", i, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("advert #%d answered after %v", i, el)
		}
	}
	if s := r.staleOf(); len(s) != 1 || !s[0] {
		t.Errorf("stored stale=%v", s)
	}
}

// TestReviewAdvertReplayedAdvertWakesPassivatedSessions: once the mark is
// durable (and the supervisor's index, reloaded, has it), a replayed advert
// cost nothing before d729fe8; on c004485 every replay spawned each session
// with that installation again (a store read of its record and skipped
// keys) and a future per session. Sessions whose mark is known durable
// (staleStored) are no longer asked.
func TestReviewAdvertReplayedAdvertWakesPassivatedSessions(t *testing.T) {
	r := newLateRigWith(t, Config{SessionIdleTimeout: 100 * time.Millisecond})
	if err := r.handler()(r.send("hello")); err != nil {
		t.Fatalf("hello: %v", err)
	}
	d := r.advertOf()
	if err := r.handler()(d); err != nil {
		t.Fatalf("advert: %v", err)
	}
	if s := r.staleOf(); len(s) != 1 || !s[0] {
		t.Fatalf("stored stale=%v", s)
	}
	waitIdle := func() {
		deadline := time.Now().Add(3 * time.Second)
		for r.e.Stats().SessionsActive != 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(400 * time.Millisecond) // the supervisor too
	}
	waitIdle()
	before := r.e.Stats().Passivations
	const replays = 3
	for i := 0; i < replays; i++ {
		if err := r.handler()(d); err != nil {
			t.Fatalf("replay %d: %v", i, err)
		}
		waitIdle()
	}
	if woke := r.e.Stats().Passivations - before; woke > 0 {
		t.Errorf("%d replays of an advert whose mark is durable spawned (and passivated) the stale session %d times: each replay costs a session spawn, a store read and a future", replays, woke)
	}
}

// TestReviewAdvertLateCommitsAddConcurrent: add sweeps with the lock held and
// calls landed(); concurrent add/pending/forget/wait must neither deadlock
// nor race.
func TestReviewAdvertLateCommitsAddConcurrent(t *testing.T) {
	var l lateCommits
	var wg sync.WaitGroup
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				ch := make(chan error, 1)
				k := []byte(fmt.Sprintf("k%d", i%7))
				c := l.add(ch, k, []byte(fmt.Sprintf("g%d-%d", g, i)))
				if i%2 == 0 {
					ch <- nil
				}
				if p := l.pending(k); p != nil && i%3 == 0 {
					p.wait(time.Microsecond)
				}
				if c.landed() {
					l.forget(c)
				}
			}
		}(g)
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("lateCommits deadlocked")
	}
}
