package actors

import (
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
	res, err := r.e.Request(r.a, &messages.SendCommand{PeerIdentity: r.bID[:], Advertise: true})
	if rep, _ := res.(*messages.SendReport); err != nil || rep == nil || rep.Error != messages.ErrorCode_OK {
		t.Fatalf("advert: %v %v", res, err)
	}
	env := r.tr.DropOne()
	if env == nil {
		t.Fatal("no advert in the transport")
	}
	d, err := transport.Open(env, 0)
	if err != nil {
		t.Fatal(err)
	}
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
