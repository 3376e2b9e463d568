package actors

import (
	"bytes"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/persistence"
)

// review2WritesSession: the commit writes b's session record with a.
func (r *inlineRig) review2WritesSession(ws []persistence.Write) bool {
	prefix := persistence.SessionPrefix(r.b, r.aID[:])
	for _, w := range ws {
		if !w.Delete && bytes.HasPrefix(w.Key, prefix) {
			return true
		}
	}
	return false
}

// review2PendingInbox waits (a while) for Pending's inbox count to be want
// and returns the last count seen.
func (r *inlineRig) review2PendingInbox(want int) int {
	r.t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		_, in, err := r.e.Pending()
		if err == nil && in == want {
			return in
		}
		if time.Now().After(deadline) {
			return in
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReview2InlineLateRefusedSweepForgetsAck (fixed: a move that answers
// late keeps the notes until its outcome is known, settleInline).
// Found by review: the installation's startup
// sweep (installation.sweepInline) commits late, and that commit is in the
// end refused by the store. On the late answer the sweep delivers m1 at once
// and forgets its notes (movedInline) as if the move had happened. The
// application acknowledges m1: no note, so Ack queues a delete of an inbox
// record that the refused commit never wrote. m1 is still in b's marked
// record: the session that loads it notes it as NOT acknowledged
// (loadedInline's add). Pending counts it again, the session's stop sweep
// moves it to an inbox record, and a clean restart delivers the
// acknowledged m1 again. (The same happens with a stopping session's sweep,
// peerSession.sweepInline, and with rescueInline: each calls movedInline on
// a late answer, whatever the outcome.)
func TestReview2InlineLateRefusedSweepForgetsAck(t *testing.T) {
	const timeout = 300 * time.Millisecond
	r := newInlineRig(t, Config{BundleResignInterval: time.Hour, CommitTimeout: timeout})
	r.send("m1")
	got := r.received(0, 1)

	// kill -9, and a restart on a store whose first mark-deleting commit
	// (the installation's sweep) answers past CommitTimeout, refused.
	img := reviewCrashCopy(t, r.store)
	r.e.Close()
	hs := &reviewHookStore{Store: img}
	refused := make(chan struct{})
	var once sync.Once
	hs.setHook(func(ws []persistence.Write) error {
		if deletesInlineMark(ws) {
			first := false
			once.Do(func() { first = true })
			if first {
				time.Sleep(timeout + 200*time.Millisecond)
				close(refused)
				return errReviewRefused
			}
		}
		return nil
	})
	r.reopen(t, hs)
	// The sweep answered late: the installation delivers m1 itself.
	again := r.received(1, 1)
	if string(again[0].ID) != string(got[0].ID) {
		t.Fatalf("redelivered %q, want m1", payloads(again))
	}
	r.ack(again[0]) // the application has m1
	select {
	case <-refused:
	case <-time.After(5 * time.Second):
		t.Fatal("the sweep's commit did not come")
	}
	time.Sleep(50 * time.Millisecond)

	// b's session loads its record (still marked, m1 in it) for m2.
	r.send("m2")
	m2 := r.received(2, 1)
	r.ack(m2...)
	if in := r.review2PendingInbox(0); in != 0 {
		rec, inbox, marks := r.stored()
		t.Errorf("m1 and m2 acknowledged, but Pending inbox %d: kept %q, %d inbox records, %d marks", in, inlinePayloads(rec), inbox, marks)
	}

	before := r.count()
	r.restart() // clean
	time.Sleep(300 * time.Millisecond)
	for _, m := range r.messages(r.b)[before:] {
		if string(m.ID) == string(got[0].ID) {
			t.Fatalf("after a clean restart b got %q: m1, acknowledged before it, again", payloads(r.messages(r.b)[before:]))
		}
	}
}

// TestReview2InlineUnloadedStopDropsAck (fixed: a stopping session whose
// late commit has landed reads its state again before its sweep).
// Found by review: b's session keeps m1 (delivered)
// in its marked record. Its next record write (m2's decrypt) answers past
// CommitTimeout and lands after: the session is unloaded until its next
// request. The application acknowledges m1 now: only a note. At a clean
// Close the stopping session's awaitLate sees the commit landed and clears
// s.late, but s.unloaded stays true, so sweepInline returns at once: the
// record keeps m1 under its mark, and the note (the acknowledgement) goes
// with the engine. The restarted installation's sweep moves m1 to an inbox
// record and delivers it again, after a clean Close/restart. (With an inbox
// record per message, Ack's delete was queued to the Committer and
// written before it stopped.)
func TestReview2InlineUnloadedStopDropsAck(t *testing.T) {
	const timeout = 300 * time.Millisecond
	r := newInlineRig(t, Config{BundleResignInterval: time.Hour, CommitTimeout: timeout})
	hs := r.hosting()
	r.send("m1")
	got := r.received(0, 1)

	landed := make(chan struct{})
	var once sync.Once
	hs.setHook(func(ws []persistence.Write) error {
		if r.review2WritesSession(ws) {
			first := false
			once.Do(func() { first = true })
			if first {
				time.Sleep(timeout + 150*time.Millisecond)
				defer close(landed)
			}
		}
		return nil
	})
	r.reviewPair.send(r.t, r.a, r.bID, "m2")
	r.tr.DeliverAll(0) // b's decrypt of m2: its commit answers late (STORE)
	select {
	case <-landed:
	case <-time.After(5 * time.Second):
		t.Fatal("m2's commit did not come")
	}
	time.Sleep(50 * time.Millisecond)
	r.ack(got[0])
	if in := r.review2PendingInbox(1); in != 1 {
		t.Logf("Pending inbox %d after acking m1 (m2 kept, not delivered yet)", in)
	}

	before := r.count()
	r.restart() // clean
	waitFor(t, "m2 after the restart", func() bool {
		return slices.Contains(payloads(r.messages(r.b)[before:]), "m2")
	})
	time.Sleep(200 * time.Millisecond)
	for _, m := range r.messages(r.b)[before:] {
		if string(m.ID) == string(got[0].ID) {
			t.Fatalf("after a clean restart b got %q: m1, acknowledged before the Close, again", payloads(r.messages(r.b)[before:]))
		}
	}
}

// TestReview2InlineDeliveredPayloadAliasesKeptEntry (fixed: the kept
// entry has its own copy). Found by review: the Message handed to
// the application shares its Payload with the entry the session keeps in
// its record (decryptWrites: ib.Payload = r.Plaintext; the installation
// delivers the DecryptResponse's Plaintext, the same slice). Every later
// record write of the session marshals that slice again, until the
// acknowledgement. An application that reuses or wipes the buffer it was
// given (its own, once delivered) before acknowledging rewrites the durable
// copy: after a kill -9 the redelivered message is not the one decrypted
// (and the application's writes race with the session's marshalling on
// another goroutine). With an inbox record per message the plaintext was
// marshalled once, in the decrypt's commit.
func TestReview2InlineDeliveredPayloadAliasesKeptEntry(t *testing.T) {
	r := newInlineRig(t, Config{BundleResignInterval: time.Hour})
	r.send("m1")
	got := r.received(0, 1)
	// The application is done with its buffer (not yet acknowledged): it
	// wipes it.
	for i := range got[0].Payload {
		got[0].Payload[i] = 'X'
	}
	r.send("m2") // b's next record write carries m1 again
	r.received(1, 1)

	r.crash()
	again := r.received(2, 2)
	for _, m := range again {
		if string(m.ID) == string(got[0].ID) && string(m.Payload) != "m1" {
			t.Fatalf("after a kill -9 m1 is redelivered as %q: the application's buffer was the durable copy", m.Payload)
		}
	}
}
