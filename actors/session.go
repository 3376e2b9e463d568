package actors

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// peerSession is the PeerSession actor: the only writer of one ratchet
// session (peer identity, peer installation, bundle id). Encrypt and decrypt
// are serialised by its mailbox. It loads its state from the store when it
// starts (and so after a restart), and commits every new state to the store
// before it answers: no plaintext is handed on before the state that
// produced it is durable, and no ciphertext leaves before the store holds
// its sending chain past the key it used (the state that produced it, or a
// reservation ahead of it: snapshot), so no restart reuses a key
// (architecture.md, durability rule 1).
type peerSession struct {
	deps     *deps
	local    string
	peer     keys.PublicKey
	storeKey []byte

	rec  *messages.SessionRecord // nil: no session yet (a responder candidate)
	sess *ratchet.Session

	// Decrypts are answered in batches: each one advances the state at
	// once, the batch's writes are committed together, then every plaintext
	// of the batch is released. A batch closes when the session reaches the
	// Flush note it sends itself behind the batch's first decrypt, so the
	// decrypts queued meanwhile share one commit, as the Committer groups
	// sessions. Anything else closes the batch first.
	held       []heldReply
	heldWrites []persistence.Write
	heldInline []*messages.InboxRecord // the batch's messages kept in the record
	heldNotify bool
	heldRecord int // 1 + the index of the session record in heldWrites; 0: none
	flushing   bool
	// unloaded: the durable state could not be read (see reload).
	unloaded bool
	// late: a commit under this session's key did not answer in
	// CommitTimeout and may still be applied (deps.lates). Until its
	// outcome has come the session writes nothing and answers STORE (see
	// reload).
	late *lateCommit
	// staleWanted: a ResetSending came while the state could not be read;
	// the mark is made once it is (ready).
	staleWanted bool
	// absent: the last load found no record under the key (not even an
	// unreadable one).
	absent bool
	// inlineMark: the store holds (or the open batch writes) this
	// session's inline mark: the entries of its record count (inline.go).
	inlineMark bool
	// dropping: acknowledged entries the record writes not yet committed
	// leave out; their notes go once one of those writes is durable.
	dropping []*messages.InboxRecord
	// received counts the messages decrypted since the state was loaded
	// (inlined).
	received int

	// Sending-chain reservations (Config.SendReserve). covered is the one
	// the store holds: the record last committed or loaded stores that
	// chain stepped to covered.upto, so an encrypt of a key below it sends
	// without a commit. reserving is the one the record write being made
	// carries (snapshot), heldCover the one of the record in the open
	// batch, which becomes covered when the batch commits.
	covered, reserving, heldCover reservation
	// used counts the keys this session has used on its current sending
	// chain since it loaded its state: a reservation never exceeds it (at
	// least one), so the keys a crash leaves unused are never more than
	// those it used, and repeated crashes cannot grow the peer's gap faster
	// than twice what they sent.
	used struct {
		chain keys.PublicKey
		n     uint32
	}
}

// reservation is a sending chain stepped ahead of use (ratchet.Reserve):
// the chain, named by our ratchet public key (a new one starts each
// chain), the message number it is stepped to, and its chain key there.
type reservation struct {
	ok    bool
	chain keys.PublicKey
	upto  uint32
	ck    ratchet.ChainKey
}

// exactly is the reservation of a state stored as it is.
func exactly(st *ratchet.State) reservation {
	return reservation{ok: true, chain: st.DHs.Public, upto: st.Ns, ck: st.Send}
}

// heldReply is an answer waiting for its batch's commit: a decrypt's
// plaintext or an encrypt's ciphertext, neither released before the state
// that produced it is durable.
type heldReply struct {
	to      *actor.PID
	decrypt *messages.DecryptResponse
	encrypt *messages.EncryptResponse
}

// answer is the reply once the commit succeeded (err nil) or failed.
func (h heldReply) answer(err error) any {
	if h.encrypt != nil {
		if err == nil {
			return h.encrypt
		}
		return &messages.EncryptResponse{PeerInstallationId: h.encrypt.PeerInstallationId, Error: messages.ErrorCode_STORE, Detail: err.Error()}
	}
	if err == nil {
		return h.decrypt
	}
	return &messages.DecryptResponse{BundleId: h.decrypt.BundleId, Error: messages.ErrorCode_STORE, Detail: err.Error()}
}

func (s *peerSession) Receive(ctx actor.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.restart(ctx, s.deps.recovered(r, "PeerSession"))
		}
	}()
	s.receive(ctx)
}

// restart recovers the session from a failure in place (it is spawned from
// the shared childProps, see deps.spawnChild): it starts again from its last
// durable snapshot; what was held for a commit is not taken.
func (s *peerSession) restart(ctx actor.Context, cause error) {
	for _, h := range s.held {
		ctx.Send(h.to, h.answer(fmt.Errorf("session restarted before its commit: %w", cause)))
	}
	if s.sess != nil {
		s.sess.State.Wipe()
		s.sess.Skipped.Wipe()
	}
	s.held, s.heldWrites, s.heldInline, s.heldRecord, s.heldNotify, s.flushing = nil, nil, nil, 0, false, false
	s.reload()
}

func (s *peerSession) receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.deps.stats.sessionsActive.Add(1)
		// A predecessor under this key that stopped with a commit still
		// unanswered: that commit may land yet.
		s.late = s.deps.lates.pending(s.storeKey)
		s.reload()
	case *actor.Stopped:
		s.deps.stats.sessionsActive.Add(-1)
		if s.sess != nil {
			s.sess.State.Wipe()
			s.sess.Skipped.Wipe()
		}
	case *actor.Stopping:
		s.flush(ctx) // answer what is held before the session goes
		s.awaitLate()
		// A ResetSending taken while the state could not be read: its
		// stale mark is made now, or the supervisor that reloads its index
		// (it keeps the mark in memory only) sends on this session again.
		if s.staleWanted && !s.ready(ctx) {
			s.deps.log.Warn("session stops before its stale mark could be made", "key", fmt.Sprintf("%x", s.storeKey))
		}
		if s.unloaded && s.late == nil {
			// A late commit that has landed: the state is read again, so
			// that the sweep writes the acknowledgements noted meanwhile.
			s.reload()
		}
		s.sweepInline()
		s.rewind() // last: a stale mark's write reserves again
	case *messages.EncryptRequest:
		if !s.ready(ctx) {
			if m.Reinit != nil {
				s.reinitFailed(ctx, m)
			}
			ctx.Respond(&messages.EncryptResponse{PeerInstallationId: m.PeerInstallationId, Error: messages.ErrorCode_STORE, Detail: "session state unavailable"})
			return
		}
		if resp := s.encrypt(ctx, m); resp != nil {
			ctx.Respond(resp)
		}
	case *messages.ResetSending:
		s.flush(ctx)
		var err error
		if !s.ready(ctx) {
			err = errStateUnavailable
		} else {
			err = s.markStale(ctx)
		}
		// Marked once the state is read again, or at the next request:
		// a transport that does not confirm never offers the advert again.
		s.staleWanted = err != nil
		if ctx.Sender() != nil {
			p := &messages.Processed{}
			if err != nil {
				p.Error, p.Detail = messages.ErrorCode_STORE, err.Error()
			}
			ctx.Respond(p)
		}
	case *messages.DecryptRequest:
		if !s.ready(ctx) {
			ctx.Respond(&messages.DecryptResponse{Error: messages.ErrorCode_STORE, Detail: "session state unavailable"})
			return
		}
		if resp := s.decrypt(ctx, m); resp != nil {
			ctx.Respond(resp)
		}
	case *messages.Flush:
		s.flushing = false
		s.flush(ctx)
	}
}

// hold adds an answer and its writes to the open batch, and opens one
// (the Flush note behind it) if there is none.
// The session record is written once per batch: each hold replaces the
// batch's earlier snapshot of it (the last one is the state after all). A
// batch is committed early once it holds a quarter of MaxBatchWrites, so
// that it always fits one transaction.
func (s *peerSession) hold(ctx actor.Context, h heldReply, writes ...persistence.Write) {
	s.held = append(s.held, h)
	for _, w := range writes {
		if !w.Delete && bytes.Equal(w.Key, s.storeKey) {
			s.heldCover = s.reserving
			if s.heldRecord > 0 {
				s.heldWrites[s.heldRecord-1] = w
				continue
			}
			s.heldRecord = len(s.heldWrites) + 1
		}
		s.heldWrites = append(s.heldWrites, w)
	}
	if len(s.heldWrites) >= s.deps.cfg.MaxBatchWrites/4 {
		s.flush(ctx)
		return
	}
	if !s.flushing {
		s.flushing = true
		ctx.Send(ctx.Self(), &messages.Flush{})
	}
}

// flush commits the writes of the held decrypts, then releases their
// plaintexts; if the commit fails none is released and the session goes
// back to its last durable snapshot.
func (s *peerSession) flush(ctx actor.Context) {
	if len(s.held) == 0 {
		return
	}
	held, writes, notify, inline := s.held, s.heldWrites, s.heldNotify, s.heldInline
	record, cover := s.heldRecord > 0, s.heldCover
	s.held, s.heldWrites, s.heldNotify, s.heldRecord, s.heldInline = nil, nil, false, 0, nil
	if err := s.commit(writes); err != nil {
		s.reload()
		for _, h := range held {
			ctx.Send(h.to, h.answer(err))
		}
		return
	}
	if record {
		s.covered = cover
	}
	// Noted before they are delivered: an acknowledgement finds them.
	s.deps.inline.add(s.local, inline...)
	if notify {
		s.notify(ctx)
	}
	for _, h := range held {
		ctx.Send(h.to, h.answer(nil))
	}
}

// ready reads the durable state again if the session is unloaded (a
// failed read, or a commit that answered late), and makes a stale mark
// that waited for it. It reports whether the state is usable.
func (s *peerSession) ready(ctx actor.Context) bool {
	if s.unloaded && s.reload() != nil {
		return false
	}
	if s.staleWanted {
		// The held decrypts first: the mark's record holds their state,
		// which must not be durable before their inbox records.
		s.flush(ctx)
		if s.unloaded {
			return false
		}
		// Wanted again if it fails (its commit answered late: the next
		// ready after the outcome tries again).
		s.staleWanted = s.markStale(ctx) != nil
	}
	return !s.unloaded
}

// commit commits the session's writes; one that does not answer in time
// leaves the session unloaded until it has (late).
func (s *peerSession) commit(ws []persistence.Write) error {
	err := s.deps.commit(ws)
	if err != nil {
		var l *lateCommitError // its address escapes: only on a failure
		if errors.As(err, &l) {
			s.late, s.unloaded = s.deps.lates.add(l.late, s.storeKey), true
		}
	}
	if err == nil && len(s.dropping) > 0 {
		s.deps.inline.forget(s.local, s.dropping, nil)
	}
	// Failed or late: the stored record may still hold them, acknowledged.
	s.dropping = nil
	return err
}

// awaitLate holds a stopping session until its late commit has answered
// (at most another CommitTimeout), so that its successor (a passivated
// session's, or the installation's staleNow once no supervisor is left)
// can read the store at once. Its parent holds the requests for this key
// meanwhile. Past that wait, deps.lates keeps the successor from writing
// before the commit's outcome has come.
func (s *peerSession) awaitLate() {
	if s.late == nil {
		return
	}
	if !s.late.wait(s.deps.cfg.CommitTimeout) {
		s.deps.log.Warn("session stops with a commit still unanswered", "key", fmt.Sprintf("%x", s.storeKey))
		return
	}
	s.deps.lates.forget(s.late)
	s.late = nil
}

// errLatePending: the session's last commit did not answer yet; reading
// the store now could give the state before it, and writing would then
// be overwritten by it.
var errLatePending = fmt.Errorf("%w: a commit of this session has not answered yet", errStore)

// errCorruptRecord: a stored session or skipped key that does not parse
// (as opposed to a store that failed to read it).
var errCorruptRecord = errors.New("corrupt session record")

// reload replaces the in-memory state with the durable one. A corrupt
// record is reported with its key and skipped: the session starts empty
// and re-establishes through the recovery flow. A store that cannot be
// read leaves the session unloaded: it answers STORE (not taken, so the
// sender offers the message again) and tries again at the next request,
// rather than forgetting a state that is still on disk.
func (s *peerSession) reload() error {
	s.rec, s.sess, s.inlineMark, s.dropping, s.received = nil, nil, false, nil, 0
	s.covered, s.reserving = reservation{}, reservation{}
	s.used.n = 0
	if s.late != nil {
		if !s.late.landed() {
			s.unloaded = true
			return errLatePending
		}
		s.deps.lates.forget(s.late)
		s.late = nil
	}
	err := s.load()
	switch {
	case err == nil:
		s.unloaded = false
	case errors.Is(err, errCorruptRecord):
		s.deps.log.Warn("session record unreadable; starting empty", "key", fmt.Sprintf("%x", s.storeKey), "err", err)
		s.deps.stats.corrupt.Add(1)
		s.unloaded, err = false, nil
	default:
		s.deps.log.Warn("session record not readable now; will retry", "key", fmt.Sprintf("%x", s.storeKey), "err", err)
		s.unloaded = true
	}
	return err
}

func (s *peerSession) load() error {
	raw, err := s.deps.store.Get(s.storeKey)
	s.absent = errors.Is(err, persistence.ErrNotFound)
	if s.absent {
		return nil
	}
	if err != nil {
		return err
	}
	var rec messages.SessionRecord
	if err := proto.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("%w: %v", errCorruptRecord, err)
	}
	if err := s.loadedInline(&rec); err != nil {
		return err
	}
	var snaps []*messages.SkippedKey
	err = s.deps.store.Scan(persistence.SkippedPrefix(s.storeKey), func(_, v []byte) error {
		var k messages.SkippedKey
		if err := proto.Unmarshal(v, &k); err != nil {
			return fmt.Errorf("%w: skipped key: %v", errCorruptRecord, err)
		}
		snaps = append(snaps, &k)
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.use(&rec, snaps); err != nil {
		if err := s.rescueInline(rec.Inbox); err != nil {
			return err // not readable now: tried again
		}
		return fmt.Errorf("%w: %v", errCorruptRecord, err)
	}
	return nil
}

func (s *peerSession) use(rec *messages.SessionRecord, skipped []*messages.SkippedKey) error {
	if _, err := keys.ParsePublicKey(rec.BundleId); err != nil {
		return fmt.Errorf("bundle id: %w", err)
	}
	st, err := ratchet.StateFromSnapshot(rec.GetState(), s.deps.cfg.Ratchet)
	if err != nil {
		return err
	}
	sk, err := ratchet.SkippedKeysFromSnapshot(skipped, st.KeysCount, s.deps.cfg.Ratchet)
	if err != nil {
		return err
	}
	s.keep(rec)
	s.sess = &ratchet.Session{State: st, Skipped: sk, Limits: s.deps.cfg.Ratchet}
	s.covered = exactly(&st)
	s.reserving = s.covered
	return nil
}

// keep makes rec the session's record in memory, without its state: the
// live state is s.sess, and a record written to the store gets a fresh
// snapshot of it (a second copy per active session, and a clone of it per
// message, otherwise).
func (s *peerSession) keep(rec *messages.SessionRecord) {
	rec.State = nil
	s.rec = rec
	s.absent = false
}

// marked adds the peer's mark (persistence.PeerKey) to the commit of the
// first record under this session's key.
func (s *peerSession) marked(writes []persistence.Write) []persistence.Write {
	if s.absent {
		writes = append(writes, peerMark(s.local, s.peer[:], persistence.MarkSessions))
	}
	return writes
}

func (s *peerSession) bundleID() keys.PublicKey { return keys.PublicKey(s.rec.BundleId) }

// reinitFailed tells the supervisor that a re-initialising encrypt made no
// session: it indexed the new session when it made it, and the next send
// must make another, not use one that does not exist.
func (s *peerSession) reinitFailed(ctx actor.Context, m *messages.EncryptRequest) {
	ctx.Send(ctx.Parent(), &messages.SessionUpdate{PeerInstallationId: m.Reinit.PeerInstallationId, BundleId: m.Reinit.BundleId})
}

// encrypt answers a failed encrypt, one that re-initialises the session,
// and one whose key a durable reservation covers, at once; any other
// encrypt on the session is held for its batch's commit (nil): no
// ciphertext leaves before the store holds its chain past its key
// (architecture.md, write-ahead on send), and the encrypts and decrypts
// queued behind each other share one commit.
func (s *peerSession) encrypt(ctx actor.Context, m *messages.EncryptRequest) *messages.EncryptResponse {
	resp := &messages.EncryptResponse{PeerInstallationId: m.PeerInstallationId}
	cur, sess := s.rec, s.sess
	var writes []persistence.Write
	if m.Reinit != nil {
		s.flush(ctx)
		if s.unloaded { // its commit failed or answered late: write nothing now
			s.reinitFailed(ctx, m)
			resp.Error, resp.Detail = messages.ErrorCode_STORE, "session state unavailable"
			return resp
		}
		cur, sess = s.rec, s.sess
		// A fresh X3DH under this key replaces the old session (the same
		// installation and SPK, after the peer lost its state: §5.4 caveat).
		// Its skipped keys go in the same commit as the first message.
		st, err := ratchet.StateFromSnapshot(m.Reinit.State, s.deps.cfg.Ratchet)
		if err != nil {
			resp.Error, resp.Detail = messages.ErrorCode_INTERNAL, err.Error()
			return resp
		}
		old, err := s.skippedKeys()
		if err != nil {
			resp.Error, resp.Detail = messages.ErrorCode_STORE, err.Error()
			return resp
		}
		for _, k := range old {
			writes = append(writes, persistence.Write{Key: k, Delete: true})
		}
		// The messages the replaced session received stay kept.
		cur, sess = proto.Clone(m.Reinit).(*messages.SessionRecord), &ratchet.Session{State: st, Limits: s.deps.cfg.Ratchet}
		if s.rec != nil {
			cur.Inbox = slices.Clone(s.rec.Inbox)
		}
	}
	if sess == nil {
		resp.Error, resp.Detail = messages.ErrorCode_NO_SESSION, "no session state"
		return resp
	}
	next, h, ct, err := ratchet.Encrypt(&sess.State, m.Payload)
	if err != nil {
		resp.Error, resp.Detail = codeOf(err), err.Error()
		return resp
	}
	if s.used.chain != next.DHs.Public {
		s.used.chain, s.used.n = next.DHs.Public, 0
	}
	s.used.n++
	if m.Reinit == nil && len(s.held) == 0 && s.covers(&sess.State) {
		// The store holds this chain stepped past the key: it can never
		// derive it again, so the ciphertext may leave with nothing to
		// commit (SendReserve).
		sess.State = next
		s.deps.stats.reservedSends.Add(1)
		return s.encrypted(resp, h, ct)
	}
	rec := cloneRecord(cur)
	rec.State = s.snapshot(&next)
	writes, marked, err := s.inlineWrite(rec, writes)
	if err != nil {
		resp.Error, resp.Detail = messages.ErrorCode_INTERNAL, err.Error()
		return resp
	}
	if m.Reinit == nil {
		sess.State = next
		s.keep(rec)
		s.inlineMark = marked // a failed commit reloads
		s.hold(ctx, heldReply{to: ctx.Sender(), encrypt: s.encrypted(resp, h, ct)}, writes...)
		return nil // answered by flush
	}
	if err := s.commit(s.marked(writes)); err != nil {
		s.reinitFailed(ctx, m)
		resp.Error, resp.Detail = messages.ErrorCode_STORE, err.Error()
		return resp
	}
	sess.State = next
	s.inlineMark = marked
	s.keep(rec)
	s.sess = sess
	s.covered = s.reserving
	s.notify(ctx)
	return s.encrypted(resp, h, ct)
}

// encrypted completes an encrypt's answer with the message of the header
// and ciphertext just made.
func (s *peerSession) encrypted(resp *messages.EncryptResponse, h ratchet.Header, ct []byte) *messages.EncryptResponse {
	bid := s.bundleID()
	resp.Message = &messages.EncryptedMessageProtocol{DrHeader: h.Proto(bid), Payload: ct}
	if s.rec.Initiator && !s.rec.Confirmed {
		// Repeated until the peer's first ratchet message on this session
		// (status-compat.md §5.3).
		resp.Message.X3DhHeader = &messages.X3DHHeader{Key: s.rec.EphemeralKey, Id: bid[:]}
	}
	return resp
}

// decrypt answers a failed or fresh decrypt at once; a decrypt on the
// session is held for its batch's commit (nil).
func (s *peerSession) decrypt(ctx actor.Context, m *messages.DecryptRequest) *messages.DecryptResponse {
	resp := &messages.DecryptResponse{}
	h, bid, err := ratchet.ParseHeader(m.GetMessage().GetDrHeader())
	if err != nil {
		resp.Error, resp.Detail = codeOf(err), err.Error()
		return resp
	}
	resp.BundleId = bid[:]
	payload := m.GetMessage().GetPayload()

	if len(m.FreshSymmetricKey) == 32 && (s.rec == nil || !keysEqual(s.rec.PeerEphemeralKey, m.FreshPeerEphemeral)) {
		// A new X3DH on this session's id (first contact, or the peer lost
		// its state and initiated again): decrypt with a fresh responder
		// state, and keep it only if the message authenticates (X3DH §3.3).
		s.flush(ctx)
		if s.unloaded { // its commit failed or answered late: write nothing now
			resp.Error, resp.Detail = messages.ErrorCode_STORE, "session state unavailable"
			return resp
		}
		return s.decryptFresh(ctx, m, h, payload, resp)
	}
	if s.sess == nil {
		resp.Error, resp.Detail = messages.ErrorCode_NO_SESSION, "no session for this bundle id"
		return resp
	}
	r, err := ratchet.Decrypt(&s.sess.State, &s.sess.Skipped, h, payload, s.deps.cfg.Ratchet, s.deps.cfg.Rand)
	if errors.Is(err, ratchet.ErrDuplicateMessage) && len(s.held) > 0 {
		// The key may have been consumed by a decrypt still held for its
		// commit (a transport retry of it): "duplicate" tells the sender it
		// was taken, so say it only once that commit is durable. If it
		// fails, the state goes back and this copy is decrypted anew.
		s.flush(ctx)
		if s.unloaded { // its commit failed and the state could not be read, or answered late
			resp.Error, resp.Detail = messages.ErrorCode_STORE, "session state unavailable"
			return resp
		}
		if s.sess == nil {
			resp.Error, resp.Detail = messages.ErrorCode_NO_SESSION, "no session for this bundle id"
			return resp
		}
		r, err = ratchet.Decrypt(&s.sess.State, &s.sess.Skipped, h, payload, s.deps.cfg.Ratchet, s.deps.cfg.Rand)
	}
	if err != nil {
		resp.Error, resp.Detail = codeOf(err), err.Error()
		return resp
	}
	var usedSeq uint64
	if r.UsedOK {
		k, _ := s.sess.Skipped.Lookup(r.Used)
		usedSeq = k.Seq
	}
	confirmed := s.rec.Confirmed || s.rec.Initiator
	rec := s.record(&r.Next, confirmed)
	writes, inline, marked, err := s.decryptWrites(rec, r, usedSeq, s.sess.Apply(r), m.Inbox)
	if err != nil {
		// The state was applied in memory: go back to the durable one.
		s.flush(ctx)
		s.reload()
		resp.Error, resp.Detail = messages.ErrorCode_INTERNAL, err.Error()
		return resp
	}
	s.heldNotify = s.heldNotify || confirmed != s.rec.Confirmed
	s.keep(rec)
	s.inlineMark = marked // a failed commit reloads
	s.received++
	if inline != nil {
		s.heldInline = append(s.heldInline, inline)
	}
	resp.Plaintext = r.Plaintext
	s.hold(ctx, heldReply{to: ctx.Sender(), decrypt: resp}, writes...)
	return nil // answered by flush
}

func (s *peerSession) decryptFresh(ctx actor.Context, m *messages.DecryptRequest, h ratchet.Header, payload []byte, resp *messages.DecryptResponse) *messages.DecryptResponse {
	// An initiation that created a session before (the one this session
	// replaced, or an older one) played again must not roll the
	// conversation back: each is recorded apart from the session record.
	initKey := persistence.InitiationKey(s.local, s.peer[:], m.PeerInstallationId, m.FreshPeerEphemeral)
	if _, err := s.deps.store.Get(initKey); err == nil {
		resp.Error, resp.Detail = messages.ErrorCode_DUPLICATE, "replayed X3DH initiation"
		return resp
	}
	spkPriv, err := keys.ParsePrivateKey(m.GetSignedPreKey().GetPrivateKey())
	if err != nil {
		resp.Error, resp.Detail = messages.ErrorCode_NO_SESSION, "unknown signed prekey"
		return resp
	}
	// The public half comes from our own record (it is the bundle id the
	// message named): no scalar multiplication to recompute it.
	spkPub, err := keys.ParsePublicKey(m.GetSignedPreKey().GetPublicKey())
	if err != nil || !spkPub.Equal(keys.PublicKey(pad33(resp.BundleId))) {
		resp.Error, resp.Detail = messages.ErrorCode_NO_SESSION, "signed prekey does not match the bundle id"
		return resp
	}
	spk := keys.KeyPair{Private: spkPriv, Public: spkPub}
	fresh := ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(m.FreshSymmetricKey), spk), Limits: s.deps.cfg.Ratchet}
	r, err := ratchet.Decrypt(&fresh.State, &fresh.Skipped, h, payload, s.deps.cfg.Ratchet, s.deps.cfg.Rand)
	if err != nil {
		resp.Error, resp.Detail = codeOf(err), err.Error()
		return resp
	}
	fresh.Apply(r)
	rec := &messages.SessionRecord{
		PeerIdentity:       s.peer[:],
		PeerInstallationId: m.PeerInstallationId,
		BundleId:           resp.BundleId,
		SymmetricKey:       m.FreshSymmetricKey,
		PeerEphemeralKey:   m.FreshPeerEphemeral,
		Confirmed:          true,
	}
	rec.State = s.snapshot(&r.Next)
	if s.rec != nil {
		rec.Inbox = slices.Clone(s.rec.Inbox) // what the replaced state received stays kept
	}
	// The old state under this id is replaced: delete its skipped keys.
	writes := []persistence.Write{{Key: initKey, Value: []byte{1}}}
	old, err := s.skippedKeys()
	for _, k := range old {
		writes = append(writes, persistence.Write{Key: k, Delete: true})
	}
	more, inline, marked, err2 := s.decryptWrites(rec, r, 0, nil, m.Inbox)
	err = errors.Join(err, err2)
	if err == nil {
		writes = append(writes, more...)
		err = s.commit(writes)
	}
	if err != nil {
		resp.Error, resp.Detail = messages.ErrorCode_STORE, err.Error()
		return resp
	}
	s.keep(rec)
	s.inlineMark = marked
	s.received++
	if inline != nil {
		s.deps.inline.add(s.local, inline)
	}
	s.sess = &fresh
	s.covered = s.reserving
	s.notify(ctx)
	resp.Plaintext = r.Plaintext
	return resp
}

// markStale records that the peer installation asked for our bundle: this
// session is no longer sent on (the supervisor knows it already), and stays
// so after a restart.
func (s *peerSession) markStale(ctx actor.Context) error {
	if s.rec == nil || s.rec.Stale {
		return nil
	}
	if s.sess == nil {
		return nil
	}
	rec := cloneRecord(s.rec)
	rec.Stale = true
	rec.State = s.snapshot(&s.sess.State)
	writes, marked, err := s.inlineWrite(rec, nil)
	if err == nil {
		err = s.commit(writes)
	}
	if err != nil {
		s.deps.log.Warn("stale mark not persisted", "key", fmt.Sprintf("%x", s.storeKey), "err", err)
		return err
	}
	s.keep(rec)
	s.inlineMark = marked
	s.covered = s.reserving
	return nil
}

// errStateUnavailable: the session's durable state cannot be read now (a
// failed read, or a commit that answered late).
var errStateUnavailable = fmt.Errorf("%w: session state unavailable", errStore)

// skippedKeys lists the store keys of this session's skipped keys. With no
// record under this key there are none (they are written only with the
// record, which is never deleted, and this actor is the key's only writer),
// so a first contact reads nothing: a prefix scan would read a block of
// every level of the tree for a key that is not there.
func (s *peerSession) skippedKeys() ([][]byte, error) {
	if s.rec == nil && s.absent {
		return nil, nil
	}
	var out [][]byte
	err := s.deps.store.Scan(persistence.SkippedPrefix(s.storeKey), func(k, _ []byte) error {
		out = append(out, bytes.Clone(k))
		return nil
	})
	return out, err
}

// record builds the session record for a new state.
func (s *peerSession) record(st *ratchet.State, confirmed bool) *messages.SessionRecord {
	rec := cloneRecord(s.rec)
	rec.State = s.snapshot(st)
	rec.Confirmed = confirmed
	return rec
}

// snapshot is the ratchet state a session record stores: st with its
// sending chain stepped past the keys reserved (Config.SendReserve), the
// reservation being made kept in s.reserving. A chain reserves as many
// keys as this session has used on it since it loaded (used), at least one
// and at most SendReserve: one commit covers a chain's next message, then
// the next two, four, ... A reservation not used up is carried by the
// chain's later writes.
func (s *peerSession) snapshot(st *ratchet.State) *messages.RatchetState {
	r := s.reserving
	if !r.ok || r.chain != st.DHs.Public || r.upto <= st.Ns {
		r = exactly(st)
		if n := s.deps.cfg.SendReserve; n > 0 && st.CanSend() {
			used := 0
			if s.used.chain == st.DHs.Public {
				used = int(s.used.n)
			}
			upto := st.Ns + uint32(min(max(used, 1), n))
			if upto < st.Ns {
				upto = math.MaxUint32
			}
			if adv, err := ratchet.Reserve(st, upto); err == nil {
				r.upto, r.ck = adv.Ns, adv.Send
			}
		}
	}
	s.reserving = r
	if r.upto == st.Ns {
		return st.Snapshot()
	}
	ahead := *st
	ahead.Send, ahead.Ns = r.ck, r.upto
	return ahead.Snapshot()
}

// covers reports whether the store holds st's sending chain stepped past
// its next key.
func (s *peerSession) covers(st *ratchet.State) bool {
	c := s.covered
	return c.ok && c.chain == st.DHs.Public && st.Ns < c.upto
}

// minRewind is the fewest unused reserved keys worth a write at Stopping: a
// single one (a conversation turn's, or a new session's) costs the peer one
// skipped key if the session ever sends again, as much as the write would.
const minRewind = 2

// rewind stores the exact sending chain of a session that stops with
// reserved keys unused (at least minRewind), so that the peer need not skip
// them when it sends again. If the commit fails the reservation stays,
// which is safe: the chain resumes past it.
func (s *peerSession) rewind() {
	if s.sess == nil || s.rec == nil || s.unloaded || s.late != nil {
		return
	}
	st := &s.sess.State
	if !s.covered.ok || s.covered.chain != st.DHs.Public || s.covered.upto-st.Ns < minRewind {
		return
	}
	rec := cloneRecord(s.rec)
	rec.State = st.Snapshot()
	writes, marked, err := s.inlineWrite(rec, nil)
	if err == nil {
		err = s.commit(writes)
	}
	if err != nil {
		s.deps.log.Warn("unused reserved keys not given back", "key", fmt.Sprintf("%x", s.storeKey), "err", err)
		return
	}
	s.keep(rec)
	s.inlineMark = marked
	s.covered = exactly(st)
	s.reserving = s.covered
}

// decryptWrites is one atomic commit: the session record, the new skipped
// keys, the deletion of the consumed and evicted ones, and the inbox record.
//
// The plaintext goes into the inbox in the same commit (durability rule 2):
// a crash after it leaves the message to be delivered again, never lost, and
// never decryptable twice.
func (s *peerSession) decryptWrites(rec *messages.SessionRecord, r *ratchet.Result, usedSeq uint64, evicted []ratchet.SkippedKey, inbox *messages.InboxRecord) (writes []persistence.Write, inline *messages.InboxRecord, marked bool, err error) {
	var own *persistence.Write // the inbox record, for a message not kept inline
	if inbox != nil {
		ib := proto.Clone(inbox).(*messages.InboxRecord)
		ib.Payload = r.Plaintext
		if s.inlined(rec, ib) {
			// Kept and written again until acknowledged: not the buffer
			// the application is given.
			ib.Payload = bytes.Clone(r.Plaintext)
			inline = ib
		} else {
			v, err := proto.Marshal(ib)
			if err != nil {
				return nil, nil, false, err
			}
			own = &persistence.Write{Key: persistence.InboxKey(s.local, ib.Id), Value: v}
		}
	}
	writes, marked, err = s.inlineWrite(rec, nil)
	if err != nil {
		return nil, nil, false, err
	}
	writes = s.marked(writes)
	if own != nil {
		writes = append(writes, *own)
	}
	for _, k := range r.Skipped {
		v, err := proto.Marshal(&messages.SkippedKey{RatchetKey: k.RatchetKey[:], N: k.N, MessageKey: k.Key[:], Seq: k.Seq})
		if err != nil {
			return nil, nil, false, err
		}
		writes = append(writes, persistence.Write{Key: persistence.SkippedKey(s.storeKey, k.Seq), Value: v})
	}
	if r.UsedOK {
		writes = append(writes, persistence.Write{Key: persistence.SkippedKey(s.storeKey, usedSeq), Delete: true})
	}
	for _, k := range evicted {
		writes = append(writes, persistence.Write{Key: persistence.SkippedKey(s.storeKey, k.Seq), Delete: true})
	}
	return writes, inline, marked, nil
}

// notify tells the supervisor what its routing and tie-break need. It is
// sent before the reply, so the supervisor sees it before any request that
// follows the reply.
func (s *peerSession) notify(ctx actor.Context) {
	ctx.Send(ctx.Parent(), &messages.SessionUpdate{
		PeerInstallationId: s.rec.PeerInstallationId,
		BundleId:           s.rec.BundleId,
		Initiator:          s.rec.Initiator,
		SymmetricKey:       s.rec.SymmetricKey,
		PeerEphemeralKey:   s.rec.PeerEphemeralKey,
		Confirmed:          s.rec.Confirmed,
		Stale:              s.rec.Stale,
	})
}

// cloneRecord copies a record of this session for a new write. The
// messages it keeps are shared, not copied: a kept InboxRecord is never
// changed.
func cloneRecord(rec *messages.SessionRecord) *messages.SessionRecord {
	inbox := rec.Inbox
	rec.Inbox = nil
	c := proto.Clone(rec).(*messages.SessionRecord)
	rec.Inbox = inbox
	c.Inbox = slices.Clone(inbox)
	return c
}

func recordWrite(k []byte, rec *messages.SessionRecord) (persistence.Write, error) {
	v, err := proto.Marshal(rec)
	if err != nil {
		return persistence.Write{}, err
	}
	return persistence.Write{Key: k, Value: v}, nil
}

func keysEqual(a, b []byte) bool {
	return len(a) == len(b) && keys.PublicKey(pad33(a)).Equal(keys.PublicKey(pad33(b)))
}

func pad33(b []byte) [keys.PublicKeySize]byte {
	var k [keys.PublicKeySize]byte
	copy(k[:], b)
	return k
}
