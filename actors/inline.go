package actors

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// Received messages kept in their session's record (durability rule 2,
// design/architecture.md).
//
// A decrypted message must be durable, with the state that decrypted it,
// until the application acknowledges it. An inbox record per message costs
// two more store entries per message (its write, and its delete at the
// acknowledgement) next to the session record's one. Instead a session keeps
// its unacknowledged plaintexts in its record (SessionRecord.inbox, at most
// Config.InlineInboxBytes), which it writes with each new state anyway:
//
//   - An acknowledgement is noted in memory (inlineInbox), not written: the
//     session's next record write leaves the message out. A session that
//     stops (passivation, Close) writes its record without them once more,
//     the messages still unacknowledged moved to inbox records of their own.
//   - The entries count only while the store holds the session's inline mark
//     (persistence.InlineMarkKey), written in the same commit as the first
//     record that holds entries and deleted with the first that holds none.
//     After a restart the installation, before any of its sessions runs,
//     moves the entries of every marked record to inbox records and deletes
//     the marks (sweepInline); a session that loads a record with entries
//     and no mark drops them, they were moved.
//   - A session keeps messages from the second it decrypts since it loaded
//     (inlined): one that receives a single message would write its record
//     again only to leave it out.
//   - A move whose commit answers late keeps its notes until the outcome is
//     known (settleInline); the sessions of its records wait for it
//     (deps.lates).
//
// A crash therefore delivers again what the application acknowledged since
// its session last wrote its record (as a lost inbox delete did before), and
// loses nothing: an entry leaves a record only in a commit that holds it
// elsewhere (an inbox record) or after its acknowledgement.

// inlineInbox is the engine's note of the messages kept in session records
// that were delivered: acked or not yet. It is shared by the Engine's Ack
// (any goroutine) and the sessions. Notes are by installation, then by
// message id: a lookup by a []byte id converts it without allocating.
type inlineInbox struct {
	mu sync.Mutex
	m  map[string]map[string]bool // local → id → acknowledged
}

// add notes delivered entries of a session record as not acknowledged (one
// noted already keeps what it has).
func (x *inlineInbox) add(local string, recs ...*messages.InboxRecord) {
	if len(recs) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = make(map[string]map[string]bool)
	}
	notes := x.m[local]
	if notes == nil {
		notes = make(map[string]bool)
		x.m[local] = notes
	}
	for _, r := range recs {
		if _, ok := notes[string(r.Id)]; !ok {
			notes[string(r.Id)] = false
		}
	}
}

// ack notes an acknowledgement; false: the message is not kept in a session
// record (its inbox record is to be deleted).
func (x *inlineInbox) ack(local string, id []byte) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	notes := x.m[local]
	if _, ok := notes[string(id)]; !ok {
		return false
	}
	notes[string(id)] = true
	return true
}

// keep returns the entries still to be kept (not acknowledged), reusing
// recs' array, and adds the acknowledged ones, which the record being
// written leaves out, to dropped. Their notes stay until that record is
// durable (forget): a write that fails leaves them in the stored record,
// still acknowledged.
func (x *inlineInbox) keep(local string, recs []*messages.InboxRecord, dropped *[]*messages.InboxRecord) []*messages.InboxRecord {
	if len(recs) == 0 {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	notes := x.m[local]
	out := recs[:0]
	for _, r := range recs {
		if notes[string(r.Id)] {
			*dropped = append(*dropped, r)
			continue
		}
		out = append(out, r)
	}
	clear(recs[len(out):])
	return out
}

// live returns the entries not acknowledged (a sweep moves them to inbox
// records).
func (x *inlineInbox) live(local string, recs []*messages.InboxRecord) []*messages.InboxRecord {
	x.mu.Lock()
	defer x.mu.Unlock()
	notes := x.m[local]
	var out []*messages.InboxRecord
	for _, r := range recs {
		if !notes[string(r.Id)] {
			out = append(out, r)
		}
	}
	return out
}

// forget drops the notes of entries no stored record counts any more (or
// that may be moved: a commit that answered late); it returns the ids of
// those acknowledged by then if asked.
func (x *inlineInbox) forget(local string, recs []*messages.InboxRecord, acked map[string]bool) {
	if len(recs) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	notes := x.m[local]
	if notes == nil {
		return
	}
	for _, r := range recs {
		if acked != nil && notes[string(r.Id)] {
			acked[string(r.Id)] = true
		}
		delete(notes, string(r.Id))
	}
}

// pending reports whether a kept entry still counts (not acknowledged).
func (x *inlineInbox) pending(local string, id []byte) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.m[local][string(id)]
}

// inlineEntryCost is what an entry counts against InlineInboxBytes besides
// its payload and id (its other fields, and its encoding): empty messages
// are bounded too.
const inlineEntryCost = 64

// inlineBytes is what kept entries count against InlineInboxBytes.
func inlineBytes(recs ...*messages.InboxRecord) int {
	n := 0
	for _, r := range recs {
		n += len(r.Payload) + len(r.Id) + inlineEntryCost
	}
	return n
}

// inlined adds a decrypted message to the record being written, if the
// session's bound allows it (reporting whether it did). The entries of rec
// the application acknowledged meanwhile are left out first.
//
// The first message a session decrypts after it loads is not kept: a
// session that receives one message and goes idle (a first contact, a
// one-off notice) would write its record once more when it stops, to
// leave it out, and keep it in memory until then; an inbox record costs
// it less. A conversation keeps from its second message on.
func (s *peerSession) inlined(rec *messages.SessionRecord, ib *messages.InboxRecord) bool {
	rec.Inbox = s.deps.inline.keep(s.local, rec.Inbox, &s.dropping)
	if (s.received == 0 && !inlineFirstMessage) || inlineBytes(ib)+inlineBytes(rec.Inbox...) > s.deps.cfg.InlineInboxBytes {
		return false
	}
	rec.Inbox = append(rec.Inbox, ib)
	return true
}

// inlineFirstMessage keeps the first message after a load too (tests of
// the kept messages' paths).
var inlineFirstMessage = false

// marking adds to a commit of rec the write that keeps the inline mark in
// step with it (none when it already is); marked is the mark's state once
// the commit succeeds.
func (s *peerSession) marking(writes []persistence.Write, rec *messages.SessionRecord) (_ []persistence.Write, marked bool) {
	want := len(rec.Inbox) > 0
	if want != s.inlineMark {
		writes = append(writes, persistence.Write{Key: persistence.InlineMarkKey(s.local, s.storeKey), Value: s.storeKey, Delete: !want})
	}
	return writes, want
}

// inlineWrite is a session record write that leaves out the entries
// acknowledged meanwhile, with its inline mark write; marked as in marking.
func (s *peerSession) inlineWrite(rec *messages.SessionRecord, writes []persistence.Write) (_ []persistence.Write, marked bool, err error) {
	rec.Inbox = s.deps.inline.keep(s.local, rec.Inbox, &s.dropping)
	w, err := recordWrite(s.storeKey, rec)
	if err != nil {
		return nil, false, err
	}
	writes, marked = s.marking(append(writes, w), rec)
	return writes, marked, nil
}

// loadedInline settles the entries of a record just loaded: with the mark
// they are the session's, and noted (they may have been delivered);
// without it the installation moved them to inbox records, and they go.
func (s *peerSession) loadedInline(rec *messages.SessionRecord) error {
	s.inlineMark = false
	if len(rec.Inbox) == 0 {
		return nil
	}
	_, err := s.deps.store.Get(persistence.InlineMarkKey(s.local, s.storeKey))
	switch {
	case err == nil:
		s.inlineMark = true
		s.deps.inline.add(s.local, rec.Inbox...)
	case errors.Is(err, persistence.ErrNotFound):
		// Moved by the installation; notes left from before (a move that
		// answered late) go, and an acknowledgement they took deletes the
		// inbox record.
		s.deps.movedInline(s.local, rec.Inbox, rec.Inbox)
		rec.Inbox = nil
	default:
		return err
	}
	return nil
}

// sweepInline is a stopping session's last record write when it keeps
// entries: the record without them, the unacknowledged ones as inbox
// records, and the mark deleted, in one commit. It stores the exact
// sending chain (as rewind does). If the commit fails the entries stay in
// the marked record, noted as they were.
func (s *peerSession) sweepInline() {
	if s.rec == nil || s.sess == nil || s.unloaded || s.late != nil || (len(s.rec.Inbox) == 0 && !s.inlineMark) {
		return
	}
	kept := s.rec.Inbox
	live := s.deps.inline.live(s.local, kept)
	var writes []persistence.Write
	for _, ib := range live {
		v, err := proto.Marshal(ib)
		if err != nil {
			return
		}
		writes = append(writes, persistence.Write{Key: persistence.InboxKey(s.local, ib.Id), Value: v})
	}
	rec := cloneRecord(s.rec)
	rec.Inbox = nil
	st := &s.sess.State
	rec.State = st.Snapshot()
	w, err := recordWrite(s.storeKey, rec)
	if err == nil {
		writes = append(writes, w, persistence.Write{Key: persistence.InlineMarkKey(s.local, s.storeKey), Delete: true})
		err = s.commit(writes)
	}
	if err != nil {
		if isLate(err) {
			s.deps.settleInline(s.late, s.local, inlineMove{persistence.InlineMarkKey(s.local, s.storeKey), kept, live})
		}
		s.deps.log.Warn("received messages kept in a session record not moved", "key", fmt.Sprintf("%x", s.storeKey), "err", err)
		return
	}
	// Moved: an acknowledgement from now on deletes the inbox record.
	s.deps.movedInline(s.local, kept, live)
	s.keep(rec)
	s.inlineMark = false
	s.covered = exactly(st)
	s.reserving = s.covered
}

// movedInline forgets the notes of entries moved to inbox records (live, of
// kept); one acknowledged since they were read gets its inbox record
// deleted.
func (d *deps) movedInline(local string, kept, live []*messages.InboxRecord) {
	if len(kept) == 0 {
		return
	}
	acked := make(map[string]bool)
	d.inline.forget(local, kept, acked)
	for _, ib := range live {
		if acked[string(ib.Id)] {
			d.commitLater([]persistence.Write{{Key: persistence.InboxKey(local, ib.Id), Delete: true}})
		}
	}
}

// inlineMove is what a commit moves out of one marked record: the entries
// kept, of which live (not acknowledged) become inbox records.
type inlineMove struct {
	mark       []byte
	kept, live []*messages.InboxRecord
}

// settleInline waits for the outcome of a commit that was to move kept
// entries and answered late: where the store no longer holds the mark they
// moved (movedInline); where it does, the commit was refused and they are
// still kept, with their notes as they are.
func (d *deps) settleInline(late *lateCommit, local string, moves ...inlineMove) {
	if late == nil {
		return
	}
	go func() {
		for !late.wait(time.Minute) {
		}
		for _, m := range moves {
			if _, err := d.store.Get(m.mark); errors.Is(err, persistence.ErrNotFound) {
				d.movedInline(local, m.kept, m.live)
			}
		}
	}()
}

// isLate reports a commit that did not answer in CommitTimeout.
func isLate(err error) bool {
	var l *lateCommitError
	return errors.As(err, &l)
}

// rescueInline moves the entries of a record whose state is unusable (the
// session starts empty, and its next record would drop them) to inbox
// records, and deletes the mark. If that fails the session stays unloaded
// and loads again later.
func (s *peerSession) rescueInline(kept []*messages.InboxRecord) error {
	if !s.inlineMark {
		return nil
	}
	live := s.deps.inline.live(s.local, kept)
	writes := make([]persistence.Write, 0, len(live)+1)
	for _, ib := range live {
		v, err := proto.Marshal(ib)
		if err != nil {
			return err
		}
		writes = append(writes, persistence.Write{Key: persistence.InboxKey(s.local, ib.Id), Value: v})
	}
	writes = append(writes, persistence.Write{Key: persistence.InlineMarkKey(s.local, s.storeKey), Delete: true})
	err := s.commit(writes)
	switch {
	case err == nil:
		s.deps.movedInline(s.local, kept, live)
	case isLate(err):
		s.deps.settleInline(s.late, s.local, inlineMove{persistence.InlineMarkKey(s.local, s.storeKey), kept, live})
	}
	if err != nil {
		s.deps.log.Warn("received messages kept in an unusable session record not moved", "key", fmt.Sprintf("%x", s.storeKey), "err", err)
		return err
	}
	s.inlineMark = false
	return nil
}

// sweepInline moves the entries of every marked session record of this
// installation to inbox records, and deletes the marks (see above). It runs
// when the installation starts, before any of its sessions; a record whose
// session has a commit that may still land is left to that session. What a
// commit could not move for sure (it failed, or answered late) is
// delivered at once: redeliver's scan of the inbox would not see it.
func (in *installation) sweepInline() {
	all, err := in.deps.inlineMarks(persistence.InlineMarkPrefix(in.id))
	if err != nil {
		in.deps.log.Warn("inline marks not read", "installation", in.id, "err", err)
		return
	}
	var (
		writes   []persistence.Write
		sessions [][]byte
		moves    []inlineMove
	)
	flush := func() {
		if len(writes) == 0 {
			return
		}
		var kept, live []*messages.InboxRecord
		for _, m := range moves {
			kept, live = append(kept, m.kept...), append(live, m.live...)
		}
		err := in.deps.commit(writes)
		var l *lateCommitError
		switch {
		case err == nil:
			in.deps.movedInline(in.id, kept, live)
		case errors.As(err, &l):
			// Its sessions wait for the outcome before they read their
			// records; the messages are in one place or the other, and
			// noted until it is known which.
			late := in.deps.lates.add(l.late, sessions...)
			in.deps.inline.add(in.id, live...)
			in.deps.settleInline(late, in.id, moves...)
			in.deliverAll(live)
		default:
			// Still in their marked records: their sessions keep them.
			in.deps.log.Warn("received messages kept in session records not moved", "installation", in.id, "err", err)
			in.deps.inline.add(in.id, live...)
			in.deliverAll(live)
		}
		writes, sessions, moves = nil, nil, nil
	}
	for _, m := range all {
		if in.deps.lates.pending(m.session) != nil {
			continue
		}
		raw, err := in.deps.store.Get(m.session)
		var rec messages.SessionRecord
		switch {
		case errors.Is(err, persistence.ErrNotFound):
		case err != nil:
			in.deps.log.Warn("session record with inline mark not read", "key", fmt.Sprintf("%x", m.session), "err", err)
			continue
		case proto.Unmarshal(raw, &rec) != nil:
			// Reported when its session loads it; its entries stay marked.
			continue
		}
		live := in.deps.inline.live(in.id, rec.Inbox)
		for _, ib := range live {
			v, err := proto.Marshal(ib)
			if err != nil {
				continue
			}
			writes = append(writes, persistence.Write{Key: persistence.InboxKey(in.id, ib.Id), Value: v})
		}
		writes = append(writes, persistence.Write{Key: m.mark, Delete: true})
		sessions = append(sessions, m.session)
		moves = append(moves, inlineMove{m.mark, rec.Inbox, live})
		if len(writes) >= in.deps.cfg.MaxBatchWrites/4 {
			flush()
		}
	}
	flush()
}

func (in *installation) deliverAll(recs []*messages.InboxRecord) {
	for _, ib := range recs {
		in.deliver(ib)
	}
}

// keptInline counts the messages kept in marked session records and not
// acknowledged (Engine.Pending).
func (d *deps) keptInline() (int, error) {
	all, err := d.inlineMarks(persistence.AllInlineMarkPrefix())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range all {
		raw, err := d.store.Get(m.session)
		if errors.Is(err, persistence.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		var rec messages.SessionRecord
		if proto.Unmarshal(raw, &rec) != nil {
			continue // reported when its session loads it
		}
		for _, ib := range rec.Inbox {
			if d.inline.pending(m.local, ib.Id) {
				n++
			}
		}
	}
	return n, nil
}

// inlineMark is one stored inline mark: its key, its installation, and
// the store key of the session record it marks.
type inlineMark struct {
	mark, session []byte
	local         string
}

// inlineMarks reads the inline marks under prefix (copied: the records
// they name are read after the scan).
func (d *deps) inlineMarks(prefix []byte) ([]inlineMark, error) {
	var all []inlineMark
	err := d.store.Scan(prefix, func(k, v []byte) error {
		if local, ok := persistence.InlineMarkLocal(k); ok {
			all = append(all, inlineMark{bytes.Clone(k), bytes.Clone(v), local})
		}
		return nil
	})
	return all, err
}
