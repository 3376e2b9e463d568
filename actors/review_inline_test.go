package actors

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// reviewHookStore is a store whose commits pass through hook first: it may
// block (a stalled store) or refuse (a failed commit).
type reviewHookStore struct {
	persistence.Store
	mu   sync.Mutex
	hook func(ws []persistence.Write) error
}

func (s *reviewHookStore) setHook(h func(ws []persistence.Write) error) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

func (s *reviewHookStore) Commit(ws []persistence.Write) error {
	s.mu.Lock()
	h := s.hook
	s.mu.Unlock()
	if h != nil {
		if err := h(ws); err != nil {
			return err
		}
	}
	return s.Store.Commit(ws)
}

var errReviewRefused = errors.New("review store: commit refused")

// deletesInlineMark: the commit deletes an inline mark (a sweep, or a record
// write whose entries were all acknowledged).
func deletesInlineMark(ws []persistence.Write) bool {
	for _, w := range ws {
		if w.Delete && bytes.HasPrefix(w.Key, persistence.AllInlineMarkPrefix()) {
			return true
		}
	}
	return false
}

// hosting reopens the rig on a hook store over its current store (a clean
// restart: Close, then Open).
func (r *inlineRig) hosting() *reviewHookStore {
	r.t.Helper()
	r.e.Close()
	hs := &reviewHookStore{Store: r.store}
	r.reopen(r.t, hs)
	return hs
}

// TestReviewInlineLateInstallationSweepLosesMessage (fixed: the sweep's
// late commit is registered in deps.lates, so the sessions read their
// records only after its outcome; and what it could not surely move is
// delivered at once). Found by review: the installation's
// startup sweep (installation.sweepInline) commits with in.deps.commit and
// does not register a late commit (deps.lates): when its commit answers
// after CommitTimeout it only logs, and the installation starts its
// sessions while the commit may still land. A session that loads its
// record now still finds the mark (inlineMark = true). The sweep's commit
// then lands and deletes the mark under it; the session's next write keeps
// a new message in the record and, believing the mark is there, writes no
// mark. After a kill -9 the record holds the new message with no mark: the
// session drops it at load, nothing moved it to an inbox record, and it is
// never delivered again though it was never acknowledged.
func TestReviewInlineLateInstallationSweepLosesMessage(t *testing.T) {
	const timeout = 300 * time.Millisecond
	r := newInlineRig(t, Config{BundleResignInterval: time.Hour, CommitTimeout: timeout})
	r.send("m1")
	r.received(0, 1)
	// m2 is sent before the crash; the test holds its envelope (the
	// transport binds a held one to the subscription of its time).
	r.reviewPair.send(t, r.a, r.bID, "m2")
	var held []*messages.Envelope
	for env := r.tr.DropOne(); env != nil; env = r.tr.DropOne() {
		held = append(held, env)
	}

	// kill -9, and a restart on a store whose first mark-deleting commit
	// (the installation's sweep) stalls past CommitTimeout.
	img := reviewCrashCopy(t, r.store)
	r.e.Close()
	hs := &reviewHookStore{Store: img}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	hs.setHook(func(ws []persistence.Write) error {
		if deletesInlineMark(ws) {
			stall := false
			once.Do(func() { stall = true })
			if stall {
				entered <- struct{}{}
				<-release
			}
		}
		return nil
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	r.reopen(t, hs)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the installation's sweep did not commit")
	}
	time.Sleep(timeout + 150*time.Millisecond) // the installation gives up on it and goes on
	// b's session loads its record (the mark is still there), decrypts m2
	// and waits for the Committer, which still applies the sweep.
	for _, env := range held {
		if err := r.tr.Publish(env); err != nil {
			t.Fatal(err)
		}
	}
	go r.tr.DeliverAll(0)
	time.Sleep(100 * time.Millisecond)
	close(release)
	// The session waits for the late sweep's outcome before it reads its
	// record: m2 was refused as not taken (STORE), and the transport offers
	// it again (a retry from the sender's outbox).
	time.Sleep(100 * time.Millisecond)
	for _, env := range held {
		if err := r.tr.Publish(env); err != nil {
			t.Fatal(err)
		}
	}
	r.tr.DeliverAll(0)
	// m1 too: the sweep that was to move it to the inbox answered late, so
	// the installation delivers it itself.
	waitFor(t, "m2 at b", func() bool { return slices.Contains(payloads(r.messages(r.b)[1:]), "m2") })
	rec, inbox, marks := r.stored()
	t.Logf("before the second crash: b got %q; kept %q, %d inbox records, %d marks", payloads(r.messages(r.b)), inlinePayloads(rec), inbox, marks)
	var m2 Message
	for _, m := range r.messages(r.b) {
		if string(m.Payload) == "m2" {
			m2 = m
		}
	}
	if _, err := durableMessage(t, r.store, r.b, m2.ID); err != nil {
		t.Errorf("m2 was delivered but is durable nowhere that counts: %v", err)
	}

	// Neither m1 nor m2 was acknowledged: a kill -9 must deliver both again.
	before := r.count()
	r.crash()
	waitFor(t, "redelivery after the second crash", func() bool { return r.count() >= before+2 })
	time.Sleep(200 * time.Millisecond)
	again := payloads(r.messages(r.b)[before:])
	if !slices.Contains(again, "m2") {
		t.Fatalf("after the second kill -9 b got %q again: m2 (decrypted, committed, never acknowledged) is lost", again)
	}
}

// TestReviewInlineStaleNoteKeepsAckedInboxRecord (fixed: a sweep reads the
// notes without changing them, and forgets them once the entries are
// moved; the installation's sweep does the same). Found by review: a
// stopping session whose
// sweep commit fails re-notes every entry (inline.add) and stops; the
// entries stay in the marked record. When the installation is hosted again
// in the same engine (StopInstallation, LoadInstallations; or a restart of
// the Installation actor after a panic) its sweep moves them to inbox
// records and deletes the mark, but the engine's note (deps.inline) still
// lists them, and nothing ever forgets them: the session that loads the
// record drops the entries. The application's Ack of the redelivered
// message then only sets the stale note (inline.ack returns true), the
// inbox record is never deleted, Pending never drops to 0, and the message
// is delivered again after a clean restart although it was acknowledged.
func TestReviewInlineStaleNoteKeepsAckedInboxRecord(t *testing.T) {
	r := newInlineRig(t, Config{BundleResignInterval: time.Hour})
	hs := r.hosting()
	r.send("m1")
	got := r.received(0, 1)

	hs.setHook(func(ws []persistence.Write) error {
		if deletesInlineMark(ws) {
			return errReviewRefused
		}
		return nil
	})
	if err := r.e.StopInstallation(r.b); err != nil {
		t.Fatal(err)
	}
	hs.setHook(nil)
	if _, err := r.e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
	again := r.received(1, 1) // the installation's sweep moved m1 to an inbox record
	if string(again[0].ID) != string(got[0].ID) {
		t.Fatalf("redelivered %q, want m1", payloads(again))
	}
	r.ack(again...)
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, in, err := r.e.Pending()
		if err == nil && in == 0 {
			break
		}
		if time.Now().After(deadline) {
			_, inbox, marks := r.stored()
			t.Fatalf("m1 acknowledged, but Pending inbox %d (%v): %d inbox records, %d marks stay", in, err, inbox, marks)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.restart()
	time.Sleep(200 * time.Millisecond)
	if n := r.count(); n != 2 {
		t.Fatalf("after a clean restart b got %q: the acknowledged m1 again", payloads(r.messages(r.b)))
	}
}

// TestReviewInlineFailedWriteForgetsAck (fixed: an acknowledgement's note
// goes only once a record without the message is durable). Found by
// review: inlineInbox.keep forgot an
// acknowledgement when it builds a record write, before the write is
// durable. If that commit fails the session reloads the stored record,
// which still holds the acknowledged message with its mark, and notes it
// as unacknowledged (loadedInline's add): the acknowledgement is gone.
// Pending counts it again, and the session's stop sweep writes it as an
// inbox record, so a clean restart delivers it again.
func TestReviewInlineFailedWriteForgetsAck(t *testing.T) {
	r := newInlineRig(t, Config{BundleResignInterval: time.Hour})
	hs := r.hosting()
	r.send("m1", "m2")
	got := r.received(0, 2)
	r.ack(got[0])
	if _, in, _ := r.e.Pending(); in != 1 {
		t.Fatalf("Pending inbox %d after acking m1, want 1", in)
	}
	// b's next record write (m3's decrypt) fails once.
	bSessions := persistence.SessionPrefix(r.b, r.aID[:])
	var once sync.Once
	hs.setHook(func(ws []persistence.Write) error {
		for _, w := range ws {
			if bytes.HasPrefix(w.Key, bSessions) {
				refuse := false
				once.Do(func() { refuse = true })
				if refuse {
					return errReviewRefused
				}
			}
		}
		return nil
	})
	r.reviewPair.send(t, r.a, r.bID, "m3")
	r.tr.DeliverAll(0)
	time.Sleep(100 * time.Millisecond)
	if _, in, _ := r.e.Pending(); in != 1 {
		t.Errorf("Pending inbox %d after a failed write, want 1 (m2): the acknowledgement of m1 was forgotten", in)
	}
	r.restart()
	time.Sleep(200 * time.Millisecond)
	for _, m := range r.messages(r.b)[2:] {
		if string(m.ID) == string(got[0].ID) {
			t.Fatalf("after a clean restart b got %q: m1, acknowledged before it, again", payloads(r.messages(r.b)[2:]))
		}
	}
}
