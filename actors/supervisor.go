package actors

import (
	"bytes"
	"fmt"
	"slices"
	"sort"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// sessionKey names a session among one peer identity's: Status keys them by
// (peer identity, peer installation, bundle id) (status-compat.md §17.10).
type sessionKey struct {
	installation string
	bundleID     keys.PublicKey
}

// sessionMeta is what the supervisor knows of a committed session.
type sessionMeta struct {
	initiator bool
	sk        [32]byte
	peerEK    keys.PublicKey
	confirmed bool
	// stale: the peer installation asked for our bundle, so it cannot use
	// this session; it stays decryptable but is not sent on (persisted by
	// the PeerSession). staleStored: the mark is known durable (read from
	// the store, or acknowledged by the session), so another advert need
	// not wake the session.
	stale, staleStored bool
}

// sessionSupervisor is the SessionSupervisor actor of one peer identity. It
// routes each message to the PeerSession named by its bundle id, creates
// sessions (active X3DH on send, passive X3DH on an X3DH header), breaks
// ties between concurrent sessions. A session that fails restarts in place
// from its last durable snapshot (peerSession.restart).
type sessionSupervisor struct {
	deps     *deps
	local    string
	identity keys.KeyPair
	peer     keys.PublicKey

	meta     metaIndex
	sessions *children[sessionKey]
}

// metaIndex is a supervisor's sessions by key, held inline in a slice: a
// peer identity has one session per installation and bundle, a handful at
// most, and a Go map costs several hundred bytes more per active
// conversation than one entry here.
type metaIndex []metaEntry

type metaEntry struct {
	k    sessionKey
	meta sessionMeta
}

// get returns the session of k, or nil; the pointer is valid until the next
// set or del.
func (x metaIndex) get(k sessionKey) *sessionMeta {
	for i := range x {
		if x[i].k == k {
			return &x[i].meta
		}
	}
	return nil
}

func (x *metaIndex) set(k sessionKey, m sessionMeta) {
	if old := x.get(k); old != nil {
		*old = m
		return
	}
	*x = append(*x, metaEntry{k, m})
}

func (x *metaIndex) del(k sessionKey) {
	for i := range *x {
		if (*x)[i].k == k {
			*x = slices.Delete(*x, i, i+1)
			return
		}
	}
}

func (s *sessionSupervisor) Receive(ctx actor.Context) {
	defer func() {
		if r := recover(); r != nil {
			// Recovered in place (see deps.spawnChild): the index is read
			// again from the store; the sessions, which own their state,
			// keep running.
			s.deps.recovered(r, "SessionSupervisor")
			s.meta = nil
			s.loadIndex()
		}
	}()
	s.receive(ctx)
}

// HandleFailure stops a PeerSession whose failure escaped its own recovery
// (see failChild).
func (s *sessionSupervisor) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	failChild(sup, child, reason, s.deps.log)
}

func (s *sessionSupervisor) receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.sessions = newChildren(s.spawn, s.deps.cfg.SessionIdleTimeout, func() { s.deps.stats.passivations.Add(1) })
		s.loadIndex()
	case *messages.Tick:
		s.sessions.onTick(ctx)
	case *messages.EncryptRequest:
		s.encrypt(ctx, m)
	case *messages.DecryptRequest:
		s.decrypt(ctx, m)
	case *messages.SessionUpdate:
		s.update(m)
	case *messages.ResetSending:
		s.resetSending(ctx, m)
	case *messages.SessionsQuery:
		ctx.Respond(s.query())
	case *actor.Stopping:
		s.sessions.close()
	case *actor.Terminated:
		s.sessions.terminated(ctx, m.Who)
	}
}

// resetSending stops sending on the sessions with a peer installation (a
// bundle advert) and has each of them record it, so that it holds after a
// passivation or a restart; the requester gets one Processed once every
// mark is durable, or STORE (not taken: the advert comes again) when one
// is not. A session whose mark is not known durable is asked again (its
// mark may be the one that failed); one whose mark is, is not woken (an
// advert may be replayed by anyone who saw it).
func (s *sessionSupervisor) resetSending(ctx actor.Context, m *messages.ResetSending) {
	requester := ctx.Sender()
	type target struct {
		k  sessionKey
		sk [32]byte // the session asked (a re-initialisation replaces it)
	}
	var targets []target
	for i := range s.meta {
		e := &s.meta[i]
		if e.k.installation == m.PeerInstallationId && !e.meta.staleStored {
			e.meta.stale = true
			targets = append(targets, target{e.k, e.meta.sk})
		}
	}
	reply := &messages.Processed{}
	answer := func() {
		if requester != nil {
			ctx.Send(requester, reply)
		}
	}
	if len(targets) == 0 {
		answer()
		return
	}
	remaining := len(targets)
	for _, t := range targets {
		f := actor.NewFuture(ctx.ActorSystem(), s.deps.cfg.RequestTimeout)
		s.sessions.forward(ctx, t.k, m, f.PID())
		ctx.ReenterAfter(f, func(res any, err error) {
			p, _ := res.(*messages.Processed)
			if e := s.meta.get(t.k); e != nil && e.sk == t.sk && err == nil && p != nil && p.Error == messages.ErrorCode_OK {
				e.staleStored = true
			}
			if reply.Error == messages.ErrorCode_OK {
				switch {
				case err != nil:
					reply.Error, reply.Detail = messages.ErrorCode_TIMEOUT, "stale mark: "+err.Error()
				case p == nil:
					reply.Error, reply.Detail = messages.ErrorCode_INTERNAL, fmt.Sprintf("stale mark: reply %T", res)
				case p.Error != messages.ErrorCode_OK:
					reply.Error, reply.Detail = p.Error, p.Detail
				}
			}
			if remaining--; remaining == 0 {
				answer()
			}
		})
	}
}

// loadIndex reads the metadata of every stored session with this peer. A
// record that cannot be read is reported with its key and left out.
func (s *sessionSupervisor) loadIndex() {
	if !s.deps.knownPeer(s.local, s.peer[:], persistence.MarkSessions) {
		return // a new peer: no sessions
	}
	err := s.deps.store.Scan(persistence.SessionPrefix(s.local, s.peer[:]), func(k, v []byte) error {
		var rec messages.SessionRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			s.deps.log.Warn("session record unreadable; skipped", "key", fmt.Sprintf("%x", k), "err", err)
			s.deps.stats.corrupt.Add(1)
			return nil
		}
		s.update(&messages.SessionUpdate{
			PeerInstallationId: rec.PeerInstallationId, BundleId: rec.BundleId, Initiator: rec.Initiator,
			SymmetricKey: rec.SymmetricKey, PeerEphemeralKey: rec.PeerEphemeralKey, Confirmed: rec.Confirmed, Stale: rec.Stale,
		})
		return nil
	})
	if err != nil {
		s.deps.log.Warn("session index scan failed", "err", err)
	}
}

func (s *sessionSupervisor) update(m *messages.SessionUpdate) {
	bid, err := keys.ParsePublicKey(m.BundleId)
	if err != nil {
		return
	}
	if len(m.SymmetricKey) == 0 {
		// A session the supervisor made was never committed: forget it.
		s.meta.del(sessionKey{m.PeerInstallationId, bid})
		return
	}
	if len(m.SymmetricKey) != 32 {
		return
	}
	// m.Stale is the session's stored record's (loadIndex, notify).
	meta := sessionMeta{initiator: m.Initiator, confirmed: m.Confirmed, stale: m.Stale, staleStored: m.Stale}
	copy(meta.sk[:], m.SymmetricKey)
	if len(m.PeerEphemeralKey) == keys.PublicKeySize {
		meta.peerEK = keys.PublicKey(m.PeerEphemeralKey)
	}
	k := sessionKey{m.PeerInstallationId, bid}
	if old := s.meta.get(k); old != nil && old.sk == meta.sk {
		// The same session, updated.
		meta.stale, meta.staleStored = meta.stale || old.stale, meta.staleStored || old.staleStored
	}
	s.meta.set(k, meta)
}

// sender picks the session to send on for one peer installation
// (5/SECURE-TRANSPORT "Concurrent sessions"): among the sessions usable for
// sending — ours as initiator against the installation's current SPK, or
// ours as responder on our current SPK (status-compat.md §10.2) — the one
// whose symmetric key comes first in byte order. Both sides apply the same
// rule to the same two keys, so they converge within one round trip.
func (s *sessionSupervisor) sender(installation string, peerSPK, ownSPK keys.PublicKey) (sessionKey, bool) {
	var best sessionKey
	var bestSK []byte
	for i := range s.meta {
		k, m := s.meta[i].k, &s.meta[i].meta
		if k.installation != installation || m.stale {
			continue
		}
		usable := (m.initiator && !peerSPK.IsZero() && k.bundleID.Equal(peerSPK)) ||
			(!m.initiator && k.bundleID.Equal(ownSPK))
		if !usable {
			continue
		}
		if bestSK == nil || bytes.Compare(m.sk[:], bestSK) < 0 {
			best, bestSK = k, m.sk[:]
		}
	}
	return best, bestSK != nil
}

func (s *sessionSupervisor) encrypt(ctx actor.Context, m *messages.EncryptRequest) {
	var peerSPK, ownSPK keys.PublicKey
	copy(peerSPK[:], m.PeerSignedPreKey)
	copy(ownSPK[:], m.OwnSignedPreKey)
	k, ok := s.sender(m.PeerInstallationId, peerSPK, ownSPK)
	if !ok {
		if _, err := keys.ParsePublicKey(m.PeerSignedPreKey); err != nil {
			ctx.Respond(&messages.EncryptResponse{PeerInstallationId: m.PeerInstallationId, Error: messages.ErrorCode_NO_SESSION, Detail: "no signed prekey known for this installation"})
			return
		}
		rec, err := s.initiate(m.PeerInstallationId, peerSPK)
		if err != nil {
			ctx.Respond(&messages.EncryptResponse{PeerInstallationId: m.PeerInstallationId, Error: codeOf(err), Detail: err.Error()})
			return
		}
		k = sessionKey{m.PeerInstallationId, peerSPK}
		// The new session goes to the PeerSession of its key, which replaces
		// whatever it held there. It is indexed now, not when the session
		// reports back: a second send queued behind this one must use it,
		// not run X3DH again and replace it (the session commits it with
		// this request's message, before any later request reaches it).
		meta := sessionMeta{initiator: true}
		copy(meta.sk[:], rec.SymmetricKey)
		s.meta.set(k, meta)
		m = proto.Clone(m).(*messages.EncryptRequest)
		m.Reinit = rec
		s.deps.stats.x3dhActive.Add(1)
		s.sessions.forward(ctx, k, m, ctx.Sender())
		return
	}
	s.sessions.forward(ctx, k, m, ctx.Sender())
}

// initiate runs the active X3DH (status-compat.md §5) and the initiator's
// initial ratchet state (§6.3) against a peer installation's SPK.
func (s *sessionSupervisor) initiate(installation string, peerSPK keys.PublicKey) (*messages.SessionRecord, error) {
	ini, err := x3dh.Initiate(s.deps.cfg.Rand, s.identity.Private, s.peer, peerSPK)
	if err != nil {
		return nil, err
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), peerSPK, s.deps.cfg.Rand)
	if err != nil {
		return nil, err
	}
	return &messages.SessionRecord{
		PeerIdentity:       s.peer[:],
		PeerInstallationId: installation,
		BundleId:           peerSPK[:],
		Initiator:          true,
		SymmetricKey:       ini.SK[:],
		EphemeralKey:       ini.Ephemeral[:],
		State:              st.Snapshot(),
	}, nil
}

func (s *sessionSupervisor) decrypt(ctx actor.Context, m *messages.DecryptRequest) {
	_, bid, err := ratchet.ParseHeader(m.GetMessage().GetDrHeader())
	if err != nil {
		ctx.Respond(&messages.DecryptResponse{Error: messages.ErrorCode_MALFORMED, Detail: err.Error()})
		return
	}
	k := sessionKey{m.PeerInstallationId, bid}
	meta := s.meta.get(k)
	if hdr := m.GetMessage().GetX3DhHeader(); hdr != nil && m.SignedPreKey != nil && bytes.Equal(hdr.Id, bid[:]) {
		ek, err := keys.ParsePublicKey(hdr.Key)
		if err != nil {
			ctx.Respond(&messages.DecryptResponse{Error: messages.ErrorCode_MALFORMED, Detail: "x3dh header: " + err.Error()})
			return
		}
		// Status redoes the passive X3DH on every message that carries the
		// header (§8.2 step 4); the result only changes with EK_A, so it is
		// computed only for an EK_A this session was not made from.
		if meta == nil || meta.initiator || !meta.peerEK.Equal(ek) {
			spk, err := keys.ParsePrivateKey(m.SignedPreKey.PrivateKey)
			if err != nil {
				ctx.Respond(&messages.DecryptResponse{Error: messages.ErrorCode_NO_SESSION, Detail: "unknown signed prekey"})
				return
			}
			sk, err := x3dh.Passive(s.identity.Private, spk, s.peer, ek)
			if err != nil {
				ctx.Respond(&messages.DecryptResponse{Error: codeOf(err), Detail: err.Error()})
				return
			}
			m = proto.Clone(m).(*messages.DecryptRequest)
			m.FreshSymmetricKey, m.FreshPeerEphemeral = sk[:], ek[:]
			s.deps.stats.x3dhPassive.Add(1)
			s.sessions.forward(ctx, k, m, ctx.Sender())
			return
		}
	}
	if meta == nil {
		ctx.Respond(&messages.DecryptResponse{Error: messages.ErrorCode_NO_SESSION, Detail: "no session for bundle id " + bid.String()})
		return
	}
	s.sessions.forward(ctx, k, m, ctx.Sender())
}

// spawn starts the PeerSession actor of a key; it loads its state from the
// store.
func (s *sessionSupervisor) spawn(ctx actor.Context, k sessionKey) *actor.PID {
	storeKey := persistence.SessionKey(s.local, s.peer[:], k.installation, k.bundleID[:])
	return s.deps.spawnChild(ctx, &peerSession{deps: s.deps, local: s.local, peer: s.peer, storeKey: storeKey})
}

func (s *sessionSupervisor) query() *messages.SessionsReply {
	r := &messages.SessionsReply{}
	for _, e := range s.meta {
		k, m := e.k, e.meta
		r.Sessions = append(r.Sessions, &messages.SessionInfo{
			PeerInstallationId: k.installation, BundleId: bytes.Clone(k.bundleID[:]),
			Initiator: m.initiator, Confirmed: m.confirmed,
		})
	}
	sort.Slice(r.Sessions, func(i, j int) bool {
		a, b := r.Sessions[i], r.Sessions[j]
		if a.PeerInstallationId != b.PeerInstallationId {
			return a.PeerInstallationId < b.PeerInstallationId
		}
		return bytes.Compare(a.BundleId, b.BundleId) < 0
	})
	return r
}
