package actors

import (
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// ---------------------------------------------------------------------------
// Failed on 131c82f: a ResetSending that came while a late commit was pending
// (staleWanted) is dropped when the session stops before its next
// encrypt/decrypt: Stopping waits for the late commit (awaitLate) but never
// makes the waiting stale mark. The supervisor has already marked the
// session stale in memory and never forwards a ResetSending for it again,
// so the stored record stays "not stale": once the supervisor reloads its
// index (its own passivation, an installation restart, a process restart)
// it sends on a session the peer said it cannot use. Stopping now makes the
// mark once the late commit has landed.
// ---------------------------------------------------------------------------

func TestReviewLateStaleMarkLostWhenSessionStops(t *testing.T) {
	f := newRVFixture(t, "r7-stale-stop")
	h, ct, err := f.a.Encrypt([]byte("m1"))
	if err != nil {
		t.Fatal(err)
	}
	sys, session, c, _ := f.spawnLate(t, f.mem)
	released := false
	defer func() {
		if !released {
			close(c.gate)
		}
	}()
	// m1's commit does not answer in CommitTimeout: a late commit.
	if r := rvReply(t, sys.Root.RequestFuture(session, f.req(h, ct, "m1"), 5*time.Second), "m1"); r.Error != messages.ErrorCode_STORE {
		t.Fatalf("m1: %v %s, want STORE (late commit)", r.Error, r.Detail)
	}
	// The peer asks for our bundle meanwhile: the mark waits (staleWanted).
	sys.Root.Send(session, &messages.ResetSending{PeerInstallationId: f.peerInstallation})
	time.Sleep(50 * time.Millisecond)
	released = true
	close(c.gate) // the late commit lands
	time.Sleep(100 * time.Millisecond)
	// No request reaches the session any more (the supervisor sends nothing
	// on a stale session): it is passivated.
	if err := sys.Root.PoisonFuture(session).Wait(); err != nil {
		t.Fatal(err)
	}
	rec := f.stored(t)
	if rec.GetState().GetRecvN() == 0 {
		t.Fatalf("stored record has no state")
	}
	if !rec.Stale {
		t.Errorf("stored record after the session stopped: stale=false; the ResetSending it took while its commit was late was never persisted (a reloaded supervisor sends on this session again)")
	}
}

// ---------------------------------------------------------------------------
// Failed on 131c82f: a re-initialising encrypt (EncryptRequest.Reinit, which the
// supervisor indexed before forwarding it) that reaches a session while a
// late commit is pending is answered STORE by the ready() check without the
// SessionUpdate that tells the supervisor to forget the session it indexed
// (the encrypt's own commit-failure path sends it). The supervisor keeps a
// phantom session; every later send to that installation goes to it as a
// plain encrypt. If the late commit was refused, the key holds no session:
// each send is answered NO_SESSION ("no installation of the peer could be
// encrypted for", a verdict on the peer) for as long as the supervisor
// lives, though the store works again. The refusal now sends the update
// (reinitFailed).
// ---------------------------------------------------------------------------

func TestReviewLateReinitDuringLateCommitLeavesPhantomSession(t *testing.T) {
	r := newLateRig(t)
	// a's first send to b runs X3DH; its commit stalls past CommitTimeout.
	r.store.armed.Store(true)
	rep := r.sendReport("x")
	r.tr.DropAll()
	if rep.Error == messages.ErrorCode_OK {
		t.Fatalf("send x: OK though its commit never answered")
	}
	t.Logf("send x (late commit): %v %s", rep.Error, rep.Detail)
	// A retry while that commit is pending: the supervisor (which forgot
	// the first session) runs X3DH again, indexes it, and the session
	// answers STORE at once.
	rep = r.sendReport("y")
	r.tr.DropAll()
	t.Logf("send y (during late commit): %v %s", rep.Error, rep.Detail)
	// The stalled commit is refused (with the Committer's one-by-one
	// retries of its batch), then the store works again.
	r.releaseWith(true)
	time.Sleep(200 * time.Millisecond)
	r.store.refuse.Store(false)
	// The store works again: a send must get through (after at most a
	// couple of retries).
	var last *messages.SendReport
	for i, text := range []string{"z1", "z2", "z3"} {
		last = r.sendReport(text)
		r.tr.DropAll()
		t.Logf("send %s after the store recovered: %v %s", text, last.Error, last.Detail)
		if last.Error == messages.ErrorCode_OK {
			if i > 0 {
				t.Logf("got through at attempt %d", i+1)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, _ := r.e.Request(r.a, &messages.SessionsQuery{PeerIdentity: r.bID[:]})
	var sessions []string
	if sr, _ := res.(*messages.SessionsReply); sr != nil {
		for _, s := range sr.Sessions {
			sessions = append(sessions, s.String())
		}
	}
	stored := 0
	_ = r.store.Scan(persistence.SessionPrefix(r.a, r.bID[:]), func(_, _ []byte) error { stored++; return nil })
	t.Errorf("every send after the store recovered failed, last %v (%s); a's supervisor indexes %v, the store holds %d session record(s) with b: a phantom session indexed by the Reinit answered STORE during the late commit", last.Error, last.Detail, sessions, stored)
}

// ---------------------------------------------------------------------------
// Failed on 131c82f (acknowledged in 86beb79's message): awaitLate waits
// at most one more CommitTimeout. A store stalled longer lets the successor
// read the state from before the late commit and write after it: b's
// stored chain goes back from m3's state (recv_n 5) to m0's (2), m3's
// skipped keys stay on disk unlisted. The late commit is now kept in
// deps.lates past its session, and the successor waits for its outcome.
// ---------------------------------------------------------------------------

func TestReviewLateStalledStoreSuccessorOverwritesLateCommit(t *testing.T) {
	r := newLateRig(t)
	if err := r.handler()(r.send("hello")); err != nil {
		t.Fatalf("first message: %v", err)
	}
	m := []transport.Delivery{r.send("m0"), r.send("m1"), r.send("m2"), r.send("m3")}
	r.store.armed.Store(true)
	if err := r.handler()(m[3]); err == nil {
		t.Fatal("m3 was taken though its commit never answered")
	}
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- r.e.StopInstallation(r.b) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("b stopped after %v with m3's commit still unanswered", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		r.release()
		t.Fatal("b did not stop within 5 s")
	}
	if _, err := r.e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.handler()(m[0]) }()
	time.Sleep(150 * time.Millisecond) // the successor has read the store and queued its commit
	r.release()                        // m3's commit lands, then the successor's
	<-done
	time.Sleep(150 * time.Millisecond)
	if got := r.recvN(); len(got) != 1 || got[0] != 5 {
		t.Errorf("b's stored session: recv_n %v, want [5] (m3's state): the successor read the state from before m3's late commit and its commit overwrote it", got)
	}
	// m3, whose plaintext the late commit put in b's inbox, offered again.
	before := r.e.Stats()
	err3 := r.handler()(m[3])
	after := r.e.Stats()
	if after.Decrypted > before.Decrypted {
		t.Errorf("m3 offered again was decrypted a second time (err %v): its late commit had already consumed its key and written its inbox record", err3)
	}
}

// ---------------------------------------------------------------------------
// Checks that hold.
// ---------------------------------------------------------------------------

// Two late commits in a row (the decrypt's, then the stale mark's made by
// ready() once the first landed): nothing is written while either is
// pending, the mark lands, and every message is taken once.
func TestReviewLateTwoLateCommitsInARow(t *testing.T) {
	f := newRVFixture(t, "r7-two-late")
	sys, session, c, d := f.spawnLate(t, f.mem) // its gate stays shut: released by hand
	release := func() {
		if _, err := sys.Root.RequestFuture(d.committer, heldRelease{}, 5*time.Second).Result(); err != nil {
			t.Fatal(err)
		}
	}
	enc := func(text string) *messages.DecryptRequest {
		h, ct, err := f.a.Encrypt([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return f.req(h, ct, text)
	}
	m1, m2, m3 := enc("m1"), enc("m2"), enc("m3")
	ask := func(req *messages.DecryptRequest, which string) *messages.DecryptResponse {
		return rvReply(t, sys.Root.RequestFuture(session, req, 5*time.Second), which)
	}
	if r := ask(m1, "m1"); r.Error != messages.ErrorCode_STORE {
		t.Fatalf("m1: %v %s, want STORE (late)", r.Error, r.Detail)
	}
	sys.Root.Send(session, &messages.ResetSending{})
	time.Sleep(30 * time.Millisecond)
	release() // m1 lands; hold stays on: the next commit is late too
	if r := ask(m2, "m2"); r.Error != messages.ErrorCode_STORE {
		t.Fatalf("m2: %v %s, want STORE (the stale mark's commit is late)", r.Error, r.Detail)
	}
	if r := ask(m3, "m3"); r.Error != messages.ErrorCode_STORE {
		t.Fatalf("m3 while the mark's commit is pending: %v %s, want STORE", r.Error, r.Detail)
	}
	c.hold.Store(false)
	release()
	if r := ask(m2, "m2 again"); r.Error != messages.ErrorCode_OK {
		t.Fatalf("m2 again: %v %s", r.Error, r.Detail)
	}
	if r := ask(m3, "m3 again"); r.Error != messages.ErrorCode_OK {
		t.Fatalf("m3 again: %v %s", r.Error, r.Detail)
	}
	if r := ask(m1, "m1 again"); r.Error != messages.ErrorCode_DUPLICATE {
		t.Fatalf("m1 again: %v %s, want DUPLICATE (its late commit landed)", r.Error, r.Detail)
	}
	received, over := c.counts()
	if over != 0 {
		t.Errorf("%d commit(s) sent while a late one was pending (of %d)", over, received)
	}
	rec := f.stored(t)
	if !rec.Stale {
		t.Errorf("stale mark lost")
	}
	// Every inbox record once: m1 (late commit), m2, m3.
	for _, id := range []string{"m1", "m2", "m3"} {
		if _, err := durableMessage(t, f.mem, f.local, []byte(id)); err != nil {
			t.Errorf("stored message %s: %v", id, err)
		}
	}
}

// Passivation (not a stop of the installation) while a commit is late:
// the request that comes while the session waits in awaitLate is held by
// the supervisor and handed to the successor, which reads m3's state.
func TestReviewLatePassivationWaitsForLateCommit(t *testing.T) {
	r := newLateRigWith(t, Config{SessionIdleTimeout: 400 * time.Millisecond})
	if err := r.handler()(r.send("hello")); err != nil {
		t.Fatalf("first message: %v", err)
	}
	m := []transport.Delivery{r.send("m0"), r.send("m1"), r.send("m2"), r.send("m3")}
	base := r.e.Stats().Passivations
	r.store.armed.Store(true)
	if err := r.handler()(m[3]); err == nil {
		t.Fatal("m3 was taken though its commit never answered")
	}
	// Wait for the passivation of a's and b's sessions (the gate is
	// still shut: b's session waits in awaitLate for ~CommitTimeout).
	deadline := time.Now().Add(3 * time.Second)
	for r.e.Stats().Passivations < base+2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.e.Stats().Passivations < base+2 {
		t.Fatalf("sessions not passivated (%d)", r.e.Stats().Passivations-base)
	}
	done := make(chan error, 1)
	go func() { done <- r.handler()(m[0]) }()
	time.Sleep(40 * time.Millisecond)
	r.release()
	err := <-done
	time.Sleep(150 * time.Millisecond)
	if got := r.recvN(); len(got) != 1 || got[0] != 5 {
		t.Errorf("b's stored session: recv_n %v, want [5] (m0 err %v)", got, err)
	}
	for i, d := range m[:3] {
		_ = i
		_ = r.handler()(d)
	}
	if c := r.e.Stats().Corrupt; c != 0 {
		t.Errorf("%d corrupt records", c)
	}
}

// The same schedule as TestReviewLateReinitDuringLateCommitLeavesPhantomSession
// with a late commit that lands: the next send goes out (on the session the
// late commit stored; the supervisor's index still holds the symmetric key
// of the second X3DH, which never existed: only the tie-break sees it).
func TestReviewLateReinitDuringLateCommitThatLands(t *testing.T) {
	r := newLateRig(t)
	r.store.armed.Store(true)
	if rep := r.sendReport("x"); rep.Error == messages.ErrorCode_OK {
		t.Fatalf("send x: OK though its commit never answered")
	}
	r.tr.DropAll()
	r.sendReport("y")
	r.tr.DropAll()
	r.release()
	time.Sleep(200 * time.Millisecond)
	rep := r.sendReport("z")
	r.tr.DropAll()
	if rep.Error != messages.ErrorCode_OK {
		t.Errorf("send z after the late commit landed: %v %s", rep.Error, rep.Detail)
	}
}

// TestLateCommitsForgetLanded: an entry nobody asks about again is dropped
// by the next add once its outcome has come.
func TestLateCommitsForgetLanded(t *testing.T) {
	var l lateCommits
	first := make(chan error, 1)
	l.add(first, []byte("a"), []byte("b"))
	first <- nil
	l.add(make(chan error, 1), []byte("c"))
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) != 1 || l.m["c"] == nil {
		t.Fatalf("registry keeps %d entries, want only c's", len(l.m))
	}
}
