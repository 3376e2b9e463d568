package actors

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// inlineRig is a crashPair (a has b's bundle) whose messages to b are
// acknowledged only when the test says so.
type inlineRig struct {
	*crashPair
	t *testing.T
}

// Its sessions keep every message they decrypt, the first after a load
// too (inlineFirstMessage), so that a test's first message is kept.
func newInlineRig(t *testing.T, cfg Config) *inlineRig {
	t.Helper()
	inlineFirstMessage = true
	r := &inlineRig{crashPair: newCrashPair(t, cfg), t: t}
	t.Cleanup(func() {
		r.close()
		inlineFirstMessage = false
	})
	return r
}

// send sends texts from a to b and delivers them.
func (r *inlineRig) send(texts ...string) {
	r.t.Helper()
	for _, s := range texts {
		r.reviewPair.send(r.t, r.a, r.bID, s)
	}
	r.tr.DeliverAll(0)
}

// received waits for b to have n messages more than it had at from, and
// returns the new ones.
func (r *inlineRig) received(from, n int) []Message {
	r.t.Helper()
	var got []Message
	waitFor(r.t, fmt.Sprintf("%d messages to b", n), func() bool {
		got = r.messages(r.b)[from:]
		return len(got) >= n
	})
	if len(got) != n {
		r.t.Fatalf("b received %d messages, want %d: %q", len(got), n, payloads(got))
	}
	return got
}

func (r *inlineRig) count() int { return len(r.messages(r.b)) }

func (r *inlineRig) ack(ms ...Message) {
	r.t.Helper()
	for _, m := range ms {
		if err := r.e.Ack(r.b, m.ID); err != nil {
			r.t.Fatal(err)
		}
	}
}

func (r *inlineRig) restart() {
	r.t.Helper()
	r.e.Close()
	r.reopen(r.t, r.store)
}

func (r *inlineRig) crash() { r.crashPair.crash(r.t) }

// stored is b's session record with a, and how many inbox records and
// inline marks the store holds.
func (r *inlineRig) stored() (rec *messages.SessionRecord, inbox, marks int) {
	r.t.Helper()
	rec = &messages.SessionRecord{}
	n := 0
	if err := r.store.Scan(persistence.SessionPrefix(r.b, r.aID[:]), func(_, v []byte) error {
		n++
		return proto.Unmarshal(v, rec)
	}); err != nil || n != 1 {
		r.t.Fatalf("%d session records of b with a (%v), want 1", n, err)
	}
	count := func(prefix []byte) int {
		c := 0
		if err := r.store.Scan(prefix, func(_, _ []byte) error { c++; return nil }); err != nil {
			r.t.Fatal(err)
		}
		return c
	}
	return rec, count(persistence.AllInboxPrefix()), count(persistence.AllInlineMarkPrefix())
}

func payloads(ms []Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Payload)
	}
	return out
}

// inlinePayloads lists the payloads kept in a session record.
func inlinePayloads(rec *messages.SessionRecord) []string {
	var out []string
	for _, ib := range rec.Inbox {
		out = append(out, string(ib.Payload))
	}
	return out
}

// Messages are kept in their session's record, with a mark and no inbox
// record; an acknowledged one leaves with the session's next write. A
// crash delivers again what the record holds, and only that.
func TestInlineInboxCrash(t *testing.T) {
	r := newInlineRig(t, Config{})
	r.send("m1", "m2", "m3")
	got := r.received(0, 3)
	if rec, inbox, marks := r.stored(); !slices.Equal(inlinePayloads(rec), []string{"m1", "m2", "m3"}) || inbox != 0 || marks != 1 {
		t.Fatalf("stored: kept %q, %d inbox records, %d marks; want m1..m3 kept, 0, 1", inlinePayloads(rec), inbox, marks)
	}
	if _, in, err := r.e.Pending(); err != nil || in != 3 {
		t.Fatalf("Pending inbox %d (%v), want 3", in, err)
	}
	r.ack(got[0], got[1])
	if _, in, _ := r.e.Pending(); in != 1 {
		t.Fatalf("Pending inbox %d after two acks, want 1", in)
	}
	r.send("m4")
	r.received(3, 1)
	if rec, inbox, _ := r.stored(); !slices.Equal(inlinePayloads(rec), []string{"m3", "m4"}) || inbox != 0 {
		t.Fatalf("after m4: kept %q, %d inbox records; want m3, m4 and none", inlinePayloads(rec), inbox)
	}

	r.crash()
	again := r.received(4, 2)
	if !slices.Equal(sorted(payloads(again)), []string{"m3", "m4"}) {
		t.Fatalf("redelivered %q, want m3, m4", payloads(again))
	}
	if !slices.ContainsFunc(again, func(m Message) bool { return string(m.ID) == string(got[2].ID) }) {
		t.Fatal("m3 redelivered under another id")
	}
	// The installation moved them to inbox records and dropped the mark;
	// the record still holds them until its session writes again.
	if _, inbox, marks := r.stored(); inbox != 2 || marks != 0 {
		t.Fatalf("after the crash: %d inbox records, %d marks; want 2, 0", inbox, marks)
	}
	r.ack(again...)
	waitFor(t, "the acks' deletes", func() bool { _, inbox, _ := r.stored(); return inbox == 0 })

	// A second crash delivers nothing again: the entries left in the
	// record count no more.
	r.crash()
	time.Sleep(50 * time.Millisecond)
	if n := r.count(); n != 6 {
		t.Fatalf("after a second crash b has %d messages, want 6: %q", n, payloads(r.received(6, 0)))
	}
	// The session's next write drops them; new messages are kept again.
	r.send("m5")
	m5 := r.received(6, 1)
	if rec, inbox, marks := r.stored(); !slices.Equal(inlinePayloads(rec), []string{"m5"}) || inbox != 0 || marks != 1 {
		t.Fatalf("after m5: kept %q, %d inbox records, %d marks; want m5, 0, 1", inlinePayloads(rec), inbox, marks)
	}
	r.ack(m5...)
	r.crash()
	if again := r.received(7, 1); string(again[0].Payload) != "m5" {
		t.Fatalf("redelivered %q, want m5 (acknowledged, but its record was not written since)", payloads(again))
	}
}

// A session that stops writes its record without its messages: the
// unacknowledged ones become inbox records, the mark goes, and a restart
// delivers exactly those.
func TestInlineInboxStop(t *testing.T) {
	for _, how := range []string{"close", "passivation"} {
		t.Run(how, func(t *testing.T) {
			cfg := Config{}
			if how == "passivation" {
				cfg.SessionIdleTimeout = 50 * time.Millisecond
			}
			r := newInlineRig(t, cfg)
			r.send("m1", "m2", "m3")
			got := r.received(0, 3)
			r.ack(got[1])
			if how == "close" {
				r.restart()
			} else {
				waitFor(t, "the passivation's sweep", func() bool { _, _, marks := r.stored(); return marks == 0 })
			}
			rec, inbox, marks := r.stored()
			if len(rec.Inbox) != 0 || inbox != 2 || marks != 0 {
				t.Fatalf("after the stop: kept %q, %d inbox records, %d marks; want none, 2, 0", inlinePayloads(rec), inbox, marks)
			}
			if _, in, _ := r.e.Pending(); in != 2 {
				t.Fatalf("Pending inbox %d, want 2", in)
			}
			if how == "passivation" {
				r.restart()
			}
			again := r.received(3, 2)
			if !slices.Equal(sorted(payloads(again)), []string{"m1", "m3"}) {
				t.Fatalf("redelivered %q, want m1, m3", payloads(again))
			}
			r.ack(again...)
			waitFor(t, "the acks' deletes", func() bool { _, in, _ := r.e.Pending(); return in == 0 })
			// The session resumes with nothing kept.
			r.send("m4")
			if m := r.received(5, 1); string(m[0].Payload) != "m4" {
				t.Fatalf("after the restart b got %q", payloads(m))
			}
		})
	}
}

// Past InlineInboxBytes a message gets an inbox record of its own; with the
// bound negative every message does, as before.
func TestInlineInboxBound(t *testing.T) {
	for _, tc := range []struct {
		bytes        int
		kept, inbox  int
		markExpected int
	}{
		{bytes: 2 * (inlineEntryCost + 2 + 32), kept: 2, inbox: 3, markExpected: 1},
		{bytes: -1, kept: 0, inbox: 5, markExpected: 0},
	} {
		t.Run(fmt.Sprint("bytes=", tc.bytes), func(t *testing.T) {
			r := newInlineRig(t, Config{InlineInboxBytes: tc.bytes})
			r.send("m1", "m2", "m3", "m4", "m5")
			r.received(0, 5)
			rec, inbox, marks := r.stored()
			if len(rec.Inbox) != tc.kept || inbox != tc.inbox || marks != tc.markExpected {
				t.Fatalf("kept %q, %d inbox records, %d marks; want %d, %d, %d", inlinePayloads(rec), inbox, marks, tc.kept, tc.inbox, tc.markExpected)
			}
			r.crash()
			again := r.received(5, 5)
			if got := payloads(again); !slices.Equal(sorted(got), []string{"m1", "m2", "m3", "m4", "m5"}) {
				t.Fatalf("redelivered %q, want m1..m5 once each", got)
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// durableMessage is the stored copy of a received message that counts: its
// inbox record, or its entry in a session record with the inline mark.
func durableMessage(t *testing.T, store persistence.Store, local string, id []byte) (*messages.InboxRecord, error) {
	t.Helper()
	if v, err := store.Get(persistence.InboxKey(local, id)); err == nil {
		var ib messages.InboxRecord
		return &ib, proto.Unmarshal(v, &ib)
	}
	var found *messages.InboxRecord
	err := store.Scan(persistence.InlineMarkPrefix(local), func(_, session []byte) error {
		raw, err := store.Get(session)
		if err != nil {
			return err
		}
		var rec messages.SessionRecord
		if err := proto.Unmarshal(raw, &rec); err != nil {
			return err
		}
		for _, ib := range rec.Inbox {
			if string(ib.Id) == string(id) {
				found = ib
			}
		}
		return nil
	})
	if err == nil && found == nil {
		err = persistence.ErrNotFound
	}
	return found, err
}

// A marked record whose state cannot be used (the session starts empty,
// and its next record would drop what it keeps): the session moves the
// messages to inbox records first. The first attempt's commit fails: the
// session stays unloaded and moves them at its next request.
func TestInlineInboxRescuedFromUnusableRecord(t *testing.T) {
	f := newSessionFixture(t, "rescue")
	rec := f.stored(t)
	rec.State.RootKey = []byte{1, 2, 3} // not 32 bytes: StateFromSnapshot refuses it
	kept := []*messages.InboxRecord{{Id: []byte("e1"), Payload: []byte("keep me")}, {Id: []byte("e2"), Payload: []byte("me too")}}
	rec.Inbox = kept
	raw, err := proto.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.mem.Commit([]persistence.Write{
		{Key: f.storeKey, Value: raw},
		{Key: persistence.InlineMarkKey(f.local, f.storeKey), Value: f.storeKey},
	}); err != nil {
		t.Fatal(err)
	}
	sys, session, fake := f.spawn(t, f.mem)
	waitFor(t, "the first, failed, commit", func() bool { return fake.requests() == 1 })
	for _, ib := range kept {
		if _, err := f.mem.Get(persistence.InboxKey(f.local, ib.Id)); err == nil {
			t.Fatalf("%s moved by a failed commit", ib.Id)
		}
	}
	res, err := sys.Root.RequestFuture(session, &messages.DecryptRequest{PeerInstallationId: f.peerInstallation}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := res.(*messages.DecryptResponse); r == nil || r.Error == messages.ErrorCode_STORE {
		t.Fatalf("after the rescue: %v, want the session loaded (empty)", res)
	}
	for _, ib := range kept {
		got, err := f.mem.Get(persistence.InboxKey(f.local, ib.Id))
		var stored messages.InboxRecord
		if err != nil || proto.Unmarshal(got, &stored) != nil || string(stored.Payload) != string(ib.Payload) {
			t.Fatalf("%s not in the inbox: %v", ib.Id, err)
		}
	}
	if _, err := f.mem.Get(persistence.InlineMarkKey(f.local, f.storeKey)); err == nil {
		t.Fatal("the mark is still there")
	}
}

// The first message a session decrypts after it loads gets an inbox record
// (a session that receives one message and stops would write its record
// again to leave it out); the next ones are kept.
func TestInlineInboxFromSecondMessage(t *testing.T) {
	r := &inlineRig{crashPair: newCrashPair(t, Config{}), t: t}
	t.Cleanup(r.close)
	r.send("m1", "m2")
	got := r.received(0, 2)
	rec, inbox, marks := r.stored()
	if !slices.Equal(inlinePayloads(rec), []string{"m2"}) || inbox != 1 || marks != 1 {
		t.Fatalf("kept %q, %d inbox records, %d marks; want m2 kept, m1 in the inbox, 1 mark", inlinePayloads(rec), inbox, marks)
	}
	r.ack(got...)
	// After a restart the session loads again: its first message is not
	// kept.
	r.restart()
	r.send("m3", "m4")
	r.received(2, 2)
	if rec, inbox, _ := r.stored(); !slices.Equal(inlinePayloads(rec), []string{"m4"}) || inbox != 1 {
		t.Fatalf("after a restart: kept %q, %d inbox records; want m4 kept, m3 in the inbox", inlinePayloads(rec), inbox)
	}
}

// The installation's move of kept messages after a crash is refused by the
// store: the messages are delivered at once all the same, stay in their
// marked record, and are moved at the next start.
func TestInlineInboxRefusedMoveDelivers(t *testing.T) {
	r := newInlineRig(t, Config{})
	r.send("m1", "m2")
	r.received(0, 2)
	img := reviewCrashCopy(t, r.store)
	r.e.Close()
	hs := &reviewHookStore{Store: img}
	var once sync.Once
	hs.setHook(func(ws []persistence.Write) error {
		refuse := false
		if deletesInlineMark(ws) {
			once.Do(func() { refuse = true })
		}
		if refuse {
			return errReviewRefused
		}
		return nil
	})
	r.reopen(t, hs)
	if again := r.received(2, 2); !slices.Equal(sorted(payloads(again)), []string{"m1", "m2"}) {
		t.Fatalf("after a refused move b got %q, want m1 and m2", payloads(again))
	}
	if rec, inbox, marks := r.stored(); len(rec.Inbox) != 2 || inbox != 0 || marks != 1 {
		t.Fatalf("after a refused move: kept %q, %d inbox records, %d marks; want both kept, none, 1", inlinePayloads(rec), inbox, marks)
	}
	// Not acknowledged: the next start moves and delivers them again.
	r.crash()
	if again := r.received(4, 2); !slices.Equal(sorted(payloads(again)), []string{"m1", "m2"}) {
		t.Fatalf("after the next crash b got %q, want m1 and m2", payloads(again))
	}
	if _, inbox, marks := r.stored(); inbox != 2 || marks != 0 {
		t.Fatalf("after the next start: %d inbox records, %d marks; want 2, 0", inbox, marks)
	}
}
