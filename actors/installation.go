package actors

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/dhfallback"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// noneKey is the map key of DH-fallback (and hash-ratchet) entries
// (status-compat.md §3.1).
const noneKey = "none"

type deviceKey struct {
	identity     keys.PublicKey
	installation string
}

// installation is the Installation actor: one hosted device. It owns the
// identity key, the installation id and the device registry (peers'
// installations and our own paired ones); it verifies and stores bundles,
// assembles outgoing ProtocolMessages and dispatches incoming entries to the
// SessionSupervisor of the sender.
type installation struct {
	deps     *deps
	rec      *messages.InstallationRecord
	identity keys.KeyPair
	id       string

	preKeys     map[keys.PublicKey]*messages.OwnPreKey
	devices     *registry
	supervisors *children[keys.PublicKey]
	asks        asks // requests to the supervisors awaiting their reply
	publisher   *actor.PID
	lastAdvert  map[keys.PublicKey]time.Time
	// seen remembers recent DH-fallback entries and public envelopes, which
	// no ratchet protects from replay (Status dedups them in its transport's
	// processed-envelope cache).
	seen *replayCache
	// verified is what processBundle keeps of the last bundle verified per
	// sender. Status attaches its bundle to every message and re-signs it
	// with the current time on every send (status-compat.md §4.2), so the
	// same entries arrive again and again under new signatures.
	verified map[keys.PublicKey]lastBundle
	// The outbox (outbox.go) is published in passes, oldest record first.
	// inflight: envelopes published and not yet confirmed (at most
	// MaxOutboxInflight); waiting: those to publish next (queued: their
	// ids); backlog: the store holds records after cursor (the last key a
	// pass read) that no pass read yet. A pass starts from the oldest
	// record after a restart and every OutboxRetryInterval while something
	// failed or was left in the store. lanes: what each recipient's sends
	// have published ahead of their oldest unconfirmed one (windowed: the
	// published, unconfirmed ids). unsent: with a transport that does not
	// confirm, the outbox holds sends it refused, and new ones queue
	// behind them.
	inflight map[string]bool
	queued   map[string]bool
	// committing: outbox records written whose commit has not answered
	// yet; passes leave them to the send that wrote them.
	committing map[string]bool
	lanes      map[string]*lane
	windowed   map[string]*slot
	// watching: the topics failing lanes published to, registered with
	// the engine's topicWatch while a lane is in them (watchLane).
	watching map[string]map[*lane]bool
	unsent   bool
	// aheadRefusals counts refusals of messages too far ahead, by
	// envelope id (refuseAhead).
	aheadRefusals map[string]int
	waiting       []outboxItem
	backlog       bool
	cursor        []byte
	retrying      bool
	// eagerAt: the last pass run at once rather than by the timer
	// (passSoon: a failing lane had a send confirmed, or was woken).
	eagerAt time.Time
	// strayFailed: a send without a lane (a public envelope) failed since
	// the last pass over the whole outbox; sweptAt: when that pass began.
	strayFailed bool
	sweptAt     time.Time
	// lateUntil: until then every timed pass reads the whole outbox (an
	// outbox commit did not answer: lateCommit).
	lateUntil time.Time
	// outboxSeq orders the outbox records (their ids start with it).
	outboxSeq uint64
	// bundle is the last bundle the publisher signed, and when.
	bundle   *messages.BundleReply
	bundleAt time.Time
	// paired is the list of paired devices last given to the publisher,
	// which a restarted publisher starts from (setPaired).
	paired atomic.Pointer[[]*messages.DeviceRecord]
	// created: CreateInstallation made this installation just now, under
	// a new random id, so the store holds no replay, inbox or outbox
	// record of it and its first start scans none (an account per message
	// in the x3dh benchmark made three empty scans per account).
	created bool
}

func newInstallation(d *deps, rec *messages.InstallationRecord) (*installation, error) {
	sk, err := keys.ParsePrivateKey(rec.IdentityPrivate)
	if err != nil {
		return nil, err
	}
	kp, err := sk.KeyPair()
	if err != nil {
		return nil, err
	}
	if len(rec.PreKeys) == 0 {
		return nil, errors.New("actors: installation record has no prekey")
	}
	for _, p := range rec.PreKeys {
		if _, err := keys.ParsePublicKey(p.PublicKey); err != nil {
			return nil, fmt.Errorf("actors: installation record: prekey: %w", err)
		}
		if _, err := keys.ParsePrivateKey(p.PrivateKey); err != nil {
			return nil, fmt.Errorf("actors: installation record: prekey: %w", err)
		}
	}
	return &installation{deps: d, rec: rec, identity: kp, id: rec.InstallationId}, nil
}

func (in *installation) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		in.start(ctx)
	case *messages.IncomingEnvelope:
		in.receive(ctx, m)
	case *messages.SendCommand:
		in.send(ctx, m)
	case *messages.PreKeysChanged:
		in.rec.PreKeys = m.PreKeys
		in.indexPreKeys()
		in.bundle = nil
	case *messages.DevicesQuery:
		ctx.Respond(in.listDevices(m))
	case *messages.SetDeviceEnabled:
		ctx.Respond(in.setEnabled(ctx, m))
	case *messages.ImportBundle:
		ctx.Respond(in.importBundle(ctx, m))
	case *messages.OutboxResult:
		in.outboxResult(ctx, m)
	case *messages.RetryOutbox:
		in.retrying = false
		in.readOutbox(ctx, true)
	case *messages.AckMessage:
		in.deps.ack(in.id, m.Id)
		if ctx.Sender() != nil { // answered when asked (Engine.Request), not to the dead letters
			ctx.Respond(&messages.Ack{})
		}
	case *messages.BundleRequest:
		ctx.Forward(in.publisher)
	case *messages.RotateRequest:
		ctx.Forward(in.publisher)
	case *messages.SessionsQuery:
		in.supervisors.forward(ctx, keys.PublicKey(pad33(m.PeerIdentity)), m, ctx.Sender())
	case *messages.Tick:
		in.supervisors.onTick(ctx)
	case *askReply:
		in.asks.replied(m)
	case *askSweep:
		in.asks.sweep(ctx, in.deps.cfg.RequestTimeout)
	case *messages.TopicsHeard:
		in.topicsHeard(ctx, m)
	case *actor.Stopping:
		in.supervisors.close()
	case *actor.Restarting:
		in.supervisors.close()
		in.asks.release(ctx)
		in.unwatchAll()
	case *actor.Stopped:
		in.asks.release(ctx)
		in.unwatchAll()
	case *actor.Terminated:
		in.supervisors.terminated(ctx, m.Who)
	}
}

// HandleFailure: the bundle publisher restarts, as under protoactor's
// default strategy; a SessionSupervisor whose failure escaped its own
// recovery is stopped (failChild).
func (in *installation) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, msg any) {
	if in.publisher != nil && child.Equal(in.publisher) {
		actor.DefaultSupervisorStrategy().HandleFailure(sys, sup, child, rs, reason, msg)
		return
	}
	failChild(sup, child, reason, in.deps.log)
}

func (in *installation) start(ctx actor.Context) {
	// A SessionSupervisor only holds its sessions' index: it is passivated
	// like them, once its sessions have been (twice the idle time).
	in.supervisors = newChildren(in.spawnSupervisor, 2*in.deps.cfg.SessionIdleTimeout, func() { in.deps.stats.supervisorPassivations.Add(1) })
	in.lastAdvert = make(map[keys.PublicKey]time.Time)
	in.seen = newReplayCache(in.deps.cfg.ReplayCacheSize)
	if !in.created {
		in.loadReplays()
	}
	in.verified = make(map[keys.PublicKey]lastBundle)
	// A restart (after a panic) starts the outbox afresh from the store.
	in.inflight = make(map[string]bool)
	in.queued = make(map[string]bool)
	in.committing = make(map[string]bool)
	in.lanes = make(map[string]*lane)
	in.windowed = make(map[string]*slot)
	in.unwatchAll()
	in.watching = make(map[string]map[*lane]bool)
	in.waiting, in.backlog, in.cursor, in.unsent, in.retrying = nil, false, nil, false, false
	in.eagerAt, in.strayFailed, in.sweptAt, in.lateUntil = time.Time{}, false, time.Time{}, time.Time{}
	in.devices = newRegistry(in.deps, in.id)
	in.indexPreKeys()
	// The publisher starts with the paired devices, so that it signs and
	// publishes the bundle once, with them; restarted after a failure (on
	// its own goroutine) it takes the list last sent to it.
	in.setPaired(in.pairedDevices())
	rec, identity := in.rec, in.identity
	in.publisher = ctx.Spawn(in.deps.props(func() actor.Actor {
		return &bundlePublisher{deps: in.deps, rec: rec, identity: identity, paired: *in.paired.Load()}
	}))
	if !in.created {
		in.redeliver(ctx)
		if in.backlog {
			in.scheduleRetry(ctx) // after a panic, nothing else starts a pass
		}
	}
	// A restart (after a panic) reloads everything.
	in.created = false
}

func (in *installation) indexPreKeys() {
	in.preKeys = make(map[keys.PublicKey]*messages.OwnPreKey, len(in.rec.PreKeys))
	for _, p := range in.rec.PreKeys {
		if pk, err := keys.ParsePublicKey(p.PublicKey); err == nil {
			in.preKeys[pk] = p
		}
	}
}

func (in *installation) currentPreKey() keys.PublicKey {
	return keys.PublicKey(in.rec.PreKeys[len(in.rec.PreKeys)-1].PublicKey)
}

func (in *installation) spawnSupervisor(ctx actor.Context, peer keys.PublicKey) *actor.PID {
	return in.deps.spawnChild(ctx, &sessionSupervisor{deps: in.deps, local: in.id, identity: in.identity, peer: peer})
}

// ask sends a request to the SessionSupervisor of a peer identity (held
// while a passivated one stops); cont runs in this actor with its reply, or
// with ErrTimeout after RequestTimeout (see asks).
func (in *installation) ask(ctx actor.Context, peer keys.PublicKey, msg any, cont func(res any, err error)) {
	in.supervisors.forward(ctx, peer, msg, in.asks.ask(ctx, in.deps.cfg.RequestTimeout, cont))
}

// activeDevices are the installations of identity to send to: enabled, most
// recently active first, at most MaxInstallations, never this installation
// (status-compat.md §8.1 step 1, §9).
func (in *installation) activeDevices(identity keys.PublicKey) []*messages.DeviceRecord {
	var out []*messages.DeviceRecord
	for inst, d := range in.devices.of(identity) {
		if d.Enabled && !(identity == in.identity.Public && inst == in.id) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *messages.DeviceRecord) int {
		if a.Timestamp != b.Timestamp {
			if a.Timestamp > b.Timestamp {
				return -1
			}
			return 1
		}
		return bytes.Compare([]byte(a.InstallationId), []byte(b.InstallationId))
	})
	if len(out) > in.deps.cfg.MaxInstallations {
		out = out[:in.deps.cfg.MaxInstallations]
	}
	return out
}

// trimDevices bounds the installations kept for one identity to
// MaxDevicesPerIdentity, forgetting the least recently active first: a peer
// can announce any number of installation ids (Status keeps them all), but
// only the MaxInstallations most recent are ever sent to.
func (in *installation) trimDevices(identity keys.PublicKey) []persistence.Write {
	devices := in.devices.of(identity)
	var mine []*messages.DeviceRecord
	for _, d := range devices {
		mine = append(mine, d)
	}
	if len(mine) <= in.deps.cfg.MaxDevicesPerIdentity {
		return nil
	}
	slices.SortFunc(mine, func(a, b *messages.DeviceRecord) int {
		switch {
		case a.Timestamp != b.Timestamp && a.Timestamp < b.Timestamp:
			return -1
		case a.Timestamp != b.Timestamp:
			return 1
		}
		return strings.Compare(a.InstallationId, b.InstallationId)
	})
	var writes []persistence.Write
	for _, d := range mine[:len(mine)-in.deps.cfg.MaxDevicesPerIdentity] {
		delete(devices, d.InstallationId)
		writes = append(writes, persistence.Write{Key: persistence.DeviceKey(in.id, identity[:], d.InstallationId), Delete: true})
	}
	return writes
}

// pairedChanged tells the publisher which paired devices the bundle lists;
// the cached bundle is stale.
func (in *installation) pairedChanged(ctx actor.Context) {
	in.bundle = nil
	list := in.pairedDevices()
	in.setPaired(list)
	ctx.Send(in.publisher, &messages.PairedDevices{Devices: list})
}

// setPaired records the paired devices last given to the publisher. Device
// records are never changed once stored in the registry (a change is a
// clone), so the list may be read from the publisher's goroutine.
func (in *installation) setPaired(list []*messages.DeviceRecord) { in.paired.Store(&list) }

// pairedDevices are our own other installations that the user enabled.
func (in *installation) pairedDevices() []*messages.DeviceRecord {
	return in.activeDevices(in.identity.Public)
}

// ---- receiving ----

// receive handles one verified transport delivery (status-compat.md §8.2).
// It answers the Engine with Processed once everything the message caused
// is done, so a caller that waits sees a quiescent installation.
func (in *installation) receive(ctx actor.Context, env *messages.IncomingEnvelope) {
	sender, err := keys.ParsePublicKey(env.Sender)
	if err != nil {
		ctx.Respond(&messages.Processed{Error: messages.ErrorCode_MALFORMED})
		return
	}
	in.peerSeen(ctx, sender)
	public := len(env.Recipient) == 0
	if !public && !bytes.Equal(env.Recipient, in.identity.Public[:]) {
		ctx.Respond(&messages.Processed{NotRecipient: true}) // another identity on the same partition topic
		return
	}
	var pm messages.ProtocolMessage
	err = proto.Unmarshal(env.Payload, &pm)
	if err != nil || (len(pm.Bundles) == 0 && len(pm.EncryptedMessage) == 0 && len(pm.PublicMessage) == 0) {
		// Status passes payloads that are not a ProtocolMessage on to the
		// application unwrapped (status-compat.md §1, SkipEncryptionLayer).
		// protobuf parsing is lenient, so an ApplicationMetadataMessage
		// often parses as a ProtocolMessage with nothing in it: that is
		// not one either.
		in.deps.stats.unwrapped.Add(1)
		in.acceptOnce(ctx, env, &messages.InboxRecord{Id: env.EnvelopeId, Sender: sender[:], Kind: int32(KindUnwrapped), Payload: env.Payload, Topic: env.Topic})
		return
	}
	if sender == in.identity.Public && pm.InstallationId == in.id {
		// Our own message, echoed on our own topic: a copy for our paired
		// devices is theirs, never this one's, so it is not the
		// recipient's word (else a copy whose devices' nodes are not known
		// would be confirmed by its sender, and lost). Only a DH-fallback
		// message to our own identity (entry "none": no paired device to
		// encrypt for) is as much this installation's as any.
		ctx.Respond(&messages.Processed{NotRecipient: pm.EncryptedMessage[noneKey] == nil})
		return
	}
	if pm.InstallationId == "" || len(pm.InstallationId) > bundle.MaxInstallationIDLength {
		in.malformed(ctx, "missing or oversized installation id")
		return
	}
	for _, b := range pm.Bundles {
		in.processBundle(ctx, sender, b)
	}
	if len(pm.PublicMessage) > 0 {
		in.acceptOnce(ctx, env, &messages.InboxRecord{Id: env.EnvelopeId, Sender: sender[:], SenderInstallation: pm.InstallationId, Kind: int32(KindPublic), Payload: pm.PublicMessage, Topic: env.Topic})
		return
	}
	if public {
		ctx.Respond(&messages.Processed{})
		return
	}
	from := deviceKey{sender, pm.InstallationId}
	entry := pm.EncryptedMessage[in.id]
	if entry == nil {
		entry = pm.EncryptedMessage[noneKey]
	}
	switch {
	case entry == nil:
		// Addressed to our identity but not to this device: the sender does
		// not know it (a partitioned or new device). Answer with our bundle
		// (5/SECURE-TRANSPORT "Partitioned devices").
		respondTo := ctx.Sender()
		processed := func() {
			if respondTo != nil {
				ctx.Send(respondTo, &messages.Processed{})
			}
		}
		if len(pm.EncryptedMessage) == 0 {
			processed()
			return
		}
		in.deps.stats.notForDevice.Add(1)
		in.advertise(ctx, from, "device not addressed", func(int, error) { processed() })
	case entry.DrHeader != nil:
		in.receiveRatchet(ctx, env, &pm, entry, sender)
	case entry.DhHeader != nil:
		in.receiveDH(ctx, env, &pm, entry, sender)
	case entry.HrHeader != nil:
		// Hash-ratchet (group) messages are parsed but not decrypted yet.
		in.deps.stats.unsupported.Add(1)
		ctx.Respond(&messages.Processed{})
	default:
		in.malformed(ctx, "entry without a key header")
	}
}

func (in *installation) malformed(ctx actor.Context, why string) {
	in.deps.stats.malformed.Add(1)
	in.deps.log.Debug("malformed message dropped", "installation", in.id, "reason", why)
	ctx.Respond(&messages.Processed{Error: messages.ErrorCode_MALFORMED, Detail: why})
}

// lastBundle is a sender's last verified bundle: its signature and, if it
// was applied (newer than what we held), its entries (sorted, as verified),
// its timestamp and when it was verified (local clock).
type lastBundle struct {
	sig     [keys.SignatureSize]byte
	entries []bundle.Entry
	at      time.Time
	ts      int64 // its timestamp (Unix ns)
}

// unchanged reports whether b lists exactly the entries of l, for identity
// id: every installation with the same prekey, version and protocol
// version, and no other. It reads b's fields and allocates nothing.
func (l *lastBundle) unchanged(id keys.PublicKey, b *messages.Bundle) bool {
	spks := b.GetSignedPreKeys()
	if !bytes.Equal(b.GetIdentity(), id[:]) || len(spks) != len(l.entries) {
		return false
	}
	for i := range l.entries {
		e := &l.entries[i]
		spk := spks[e.InstallationID]
		if spk == nil || !bytes.Equal(spk.GetSignedPreKey(), e.SignedPreKey[:]) ||
			spk.GetVersion() != e.Version || spk.GetProtocolVersion() != e.ProtocolVersion {
			return false
		}
	}
	return true
}

// skips reports whether b, from id, is taken for l unverified: l was
// applied, b lists exactly its entries, and both our clock and b's
// timestamp are less than interval past l's. The timestamp counts too
// because history fetched at once (a store node's backlog after we were
// offline) arrives within a second of our time: the oldest bundle would
// otherwise hold back the newest. b's timestamp is unverified, so it can
// only make us verify, never spare a check that matters: a bundle with l's
// entries and an older timestamp changes nothing.
func (l *lastBundle) skips(id keys.PublicKey, b *messages.Bundle, now time.Time, interval time.Duration) bool {
	if l.entries == nil || interval <= 0 {
		return false
	}
	if d := now.Sub(l.at); d < 0 || d >= interval {
		return false
	}
	if b.GetTimestamp()-l.ts >= int64(interval) {
		return false
	}
	return l.unchanged(id, b)
}

// processBundle verifies a received bundle before anything of it is used or
// stored, and rejects a bundle that is not the sender's own (X3DH §3.3;
// status-compat.md §4.4: Status checks neither first).
//
// A bundle that cannot change what we store is not verified again, and
// nothing of it is used:
//   - one with the sender's last verified signature. Other content under
//     that signature (only its signer can send it, in an envelope it
//     signed too) changes nothing, as when it fails verification. (This
//     replaced a deterministic marshal and a Keccak of every attached
//     bundle: 6 allocations per received message.)
//   - one that lists exactly the entries of the sender's last verified
//     bundle, if that one was newer than what we held, within
//     BundleRecheckInterval of that verification and of its timestamp
//     (skips). Status re-signs its
//     bundle with the current time on every send (§4.2), so without this
//     every message from a Status client cost a signature recovery
//     (~50 µs) on top of its envelope's. All such a bundle could change is
//     the devices' activity time, which is then kept at most
//     BundleRecheckInterval behind. Any change of entries (a rotated
//     prekey, a new version, a device added or gone) is verified at once.
//
// What the signature does not cover (the entries' protocol versions,
// status-compat.md §4.4) changes only with a new signature.
func (in *installation) processBundle(ctx actor.Context, sender keys.PublicKey, b *messages.Bundle) {
	var sig [keys.SignatureSize]byte
	if len(b.GetSignature()) == len(sig) {
		copy(sig[:], b.Signature)
	}
	now := in.deps.cfg.Clock()
	if last, ok := in.verified[sender]; ok {
		if last.sig == sig {
			return
		}
		if last.skips(sender, b, now, in.deps.cfg.BundleRecheckInterval) {
			in.deps.stats.bundlesUnchanged.Add(1)
			return
		}
	}
	in.deps.stats.bundlesVerified.Add(1)
	v, err := bundle.Verifier{MaxEntries: in.deps.cfg.MaxBundleEntries}.Verify(b)
	if err != nil {
		in.deps.stats.badBundles.Add(1)
		in.deps.log.Debug("bundle rejected", "err", err)
		return
	}
	if v.Identity != sender {
		in.deps.stats.badBundles.Add(1)
		in.deps.log.Debug("bundle of another identity rejected", "bundle", v.Identity.String(), "sender", sender.String())
		return
	}
	applied := in.storeBundle(ctx, v)
	if _, ok := in.verified[sender]; !ok && len(in.verified) >= in.deps.cfg.ReplayCacheSize {
		for k := range in.verified { // a random one (map order): a busy bot keeps most of its peers
			delete(in.verified, k)
			break
		}
	}
	// A verified bundle's signature has its size. Its entries are what
	// later bundles are compared with only if it was applied: one no newer
	// than what we hold (a replay, even of the last one applied; a late or
	// clock-skewed one; the bundle imported when we met) would hold back
	// the sender's newer activity for the interval, and a replay every
	// minute would freeze it, or steer our sends to another of the
	// sender's devices.
	last := lastBundle{sig: sig}
	if applied {
		last.entries, last.at, last.ts = v.Entries, now, v.Timestamp
	}
	in.verified[sender] = last
}

// storeBundle records a verified bundle's installations (status-compat.md
// §4.5): new installations of other identities are enabled, our own start
// disabled (pairing needs approval, §9); a higher version, or a different
// prekey in a newer bundle (a device that lost its state), replaces the
// installation's prekey and so expires the old one for sending (re-keying,
// §10.2); activity is the newest bundle timestamp.
//
// It reports whether the bundle was newer than the activity of every
// installation it lists (but this one), and the registry now holds it as it
// is: each of them with its prekey and version, and the bundle's timestamp
// as its activity. An older bundle, or the same one again, is not.
func (in *installation) storeBundle(ctx actor.Context, v *bundle.Verified) (applied bool) {
	own := v.Identity == in.identity.Public
	var writes []persistence.Write
	pairedChanged, marked, newer := false, false, true
	for _, e := range v.Entries {
		if own && e.InstallationID == in.id {
			continue
		}
		devices := in.devices.of(v.Identity)
		d := devices[e.InstallationID]
		if d != nil && d.Timestamp >= v.Timestamp {
			newer = false
		}
		changed := false
		if d == nil {
			d = &messages.DeviceRecord{
				Identity: v.Identity[:], InstallationId: e.InstallationID, SignedPreKey: e.SignedPreKey[:],
				Version: e.Version, ProtocolVersion: e.ProtocolVersion, Timestamp: v.Timestamp,
				BundleTimestamp: v.Timestamp, Enabled: !own,
			}
			changed = true
		} else {
			d = proto.Clone(d).(*messages.DeviceRecord)
			newKey := !bytes.Equal(d.SignedPreKey, e.SignedPreKey[:])
			if e.Version > d.Version || (newKey && v.Timestamp > d.BundleTimestamp) {
				d.SignedPreKey, d.Version, d.BundleTimestamp = e.SignedPreKey[:], e.Version, v.Timestamp
				changed = true
			}
			if v.Timestamp > d.Timestamp {
				d.Timestamp = v.Timestamp
				changed = true
			}
			if e.ProtocolVersion > d.ProtocolVersion {
				d.ProtocolVersion = e.ProtocolVersion
				changed = true
			}
		}
		if !changed {
			continue
		}
		val, err := proto.Marshal(d)
		if err != nil {
			continue
		}
		if !marked {
			// Every commit of a device record carries the identity's mark
			// (a few bytes): the registry's cache cannot tell whether an
			// earlier one, not waited for, was committed.
			writes = append(writes, peerMark(in.id, v.Identity[:], persistence.MarkDevices))
			marked = true
		}
		writes = append(writes, persistence.Write{Key: persistence.DeviceKey(in.id, v.Identity[:], e.InstallationID), Value: val})
		devices[e.InstallationID] = d
		pairedChanged = pairedChanged || (own && d.Enabled)
	}
	writes = append(writes, in.trimDevices(v.Identity)...)
	if len(writes) > 0 {
		// Not waited for: a registry update lost in a crash is repeated by
		// the next bundle the peer attaches.
		in.deps.commitLater(writes)
	}
	if pairedChanged {
		in.pairedChanged(ctx)
	}
	if !newer {
		return false
	}
	devices := in.devices.of(v.Identity)
	for i := range v.Entries {
		e := &v.Entries[i]
		if own && e.InstallationID == in.id {
			continue
		}
		d := devices[e.InstallationID]
		if d == nil || d.Version != e.Version || d.Timestamp != v.Timestamp || !bytes.Equal(d.SignedPreKey, e.SignedPreKey[:]) {
			return false
		}
	}
	return true
}

func (in *installation) receiveDH(ctx actor.Context, env *messages.IncomingEnvelope, pm *messages.ProtocolMessage, e *messages.EncryptedMessageProtocol, sender keys.PublicKey) {
	ek, err := keys.ParsePublicKey(e.DhHeader.Key)
	if err != nil {
		in.malformed(ctx, "dh header key: "+err.Error())
		return
	}
	pt, err := dhfallback.Open(in.identity.Private, ek, e.Payload)
	if err != nil {
		in.deps.stats.decryptFailures.Add(1)
		ctx.Respond(&messages.Processed{Error: messages.ErrorCode_INVALID_MAC, Detail: err.Error()})
		return
	}
	if len(pt) == 0 && in.supervisors.closed {
		// An advert (below) while the installation stops: no
		// SessionSupervisor is spawned any more to reset its sessions.
		// With no supervisor left for the peer, no PeerSession writes its
		// records: they are marked stale here, since a transport that
		// does not confirm delivery never offers the advert again (its
		// sender is rate-limited). One still stopping refuses it: only a
		// confirming transport offers it again (the sender's outbox).
		if in.supervisors.find(sender) != nil {
			ctx.Respond(&messages.Processed{Error: messages.ErrorCode_CLOSED, Detail: "stopping: bundle advert not taken"})
			return
		}
		if err := in.staleNow(sender, pm.InstallationId); err != nil {
			ctx.Respond(&messages.Processed{Error: messages.ErrorCode_STORE, Detail: err.Error()})
			return
		}
		ctx.Respond(&messages.Processed{})
		return
	}
	digest := keys.Keccak256(ek[:], e.Payload)
	if !in.fresh(digest) {
		in.deps.stats.duplicates.Add(1)
		ctx.Respond(&messages.Processed{Error: messages.ErrorCode_DUPLICATE})
		return
	}
	if len(pt) == 0 {
		// An empty DH payload is a bundle advertisement: the sender's
		// installation does not have (or lost) the sessions we send on, so
		// the next send to it starts a fresh X3DH. Only the holder of the
		// sender's identity key can sign the envelope that triggers this.
		// It is taken once the sessions' stale marks are durable: before,
		// a confirming transport's sender would drop it from its outbox
		// while a crash or a failed commit could still lose the reset, and
		// the advert is rate-limited.
		respondTo := ctx.Sender()
		in.ask(ctx, sender, &messages.ResetSending{PeerInstallationId: pm.InstallationId}, func(res any, err error) {
			p, _ := res.(*messages.Processed)
			switch {
			case err != nil:
				p = &messages.Processed{Error: codeOf(err), Detail: "bundle advert: " + err.Error()}
			case p == nil:
				p = &messages.Processed{Error: messages.ErrorCode_INTERNAL, Detail: fmt.Sprintf("bundle advert: reply %T", res)}
			}
			if respondTo != nil {
				ctx.Send(respondTo, p)
			}
		})
		return
	} else if err := in.accept(&messages.InboxRecord{Id: env.EnvelopeId, Sender: sender[:], SenderInstallation: pm.InstallationId, Kind: int32(KindDirect), Payload: pt, Topic: env.Topic, NoForwardSecrecy: true}, digest[:]); err != nil {
		ctx.Respond(&messages.Processed{Error: messages.ErrorCode_STORE, Detail: err.Error()})
		return
	}
	ctx.Respond(&messages.Processed{})
}

// staleNow marks the stored sessions with a peer installation stale (as a
// PeerSession does on ResetSending), for an installation that stops and has
// no SessionSupervisor for the peer: nothing else writes those records, and
// the next supervisor reads the mark (loadIndex).
func (in *installation) staleNow(peer keys.PublicKey, peerInstallation string) error {
	var writes []persistence.Write
	err := in.deps.store.Scan(persistence.SessionPrefix(in.id, peer[:]), func(k, v []byte) error {
		var rec messages.SessionRecord
		if proto.Unmarshal(v, &rec) != nil || rec.PeerInstallationId != peerInstallation || rec.Stale {
			return nil // an unreadable one is reported when it is loaded
		}
		if in.deps.lates.pending(k) != nil {
			return errLatePending // a session's commit may still land: not taken, offered again
		}
		rec.Stale = true
		w, err := recordWrite(append([]byte(nil), k...), &rec)
		if err != nil {
			return err
		}
		writes = append(writes, w)
		return nil
	})
	if err != nil || len(writes) == 0 {
		return err
	}
	err = in.deps.commit(writes)
	var l *lateCommitError
	if errors.As(err, &l) {
		keys := make([][]byte, len(writes))
		for i, w := range writes {
			keys[i] = w.Key
		}
		in.deps.lates.add(l.late, keys...)
	}
	return err
}

func (in *installation) receiveRatchet(ctx actor.Context, env *messages.IncomingEnvelope, pm *messages.ProtocolMessage, e *messages.EncryptedMessageProtocol, sender keys.PublicKey) {
	req := &messages.DecryptRequest{PeerInstallationId: pm.InstallationId, Message: e, Inbox: &messages.InboxRecord{
		Id: env.EnvelopeId, Sender: sender[:], SenderInstallation: pm.InstallationId, Kind: int32(KindDirect),
		Topic: env.Topic, ReceivedUnixNano: in.deps.cfg.Clock().UnixNano(),
	}}
	if h := e.X3DhHeader; h != nil {
		if pk, err := keys.ParsePublicKey(h.Id); err == nil {
			req.SignedPreKey = in.preKeys[pk]
		}
	}
	respondTo := ctx.Sender()
	from := deviceKey{sender, pm.InstallationId}
	in.ask(ctx, sender, req, func(res any, err error) {
		r, _ := res.(*messages.DecryptResponse)
		code := messages.ErrorCode_TIMEOUT
		detail := ""
		switch {
		case err == nil && r != nil:
			code, detail = r.Error, r.Detail
		case err != nil:
			code, detail = codeOf(err), err.Error() // ErrClosed (released) or ErrTimeout (swept)
			if code != messages.ErrorCode_CLOSED {
				code = messages.ErrorCode_TIMEOUT
			}
		}
		switch code {
		case messages.ErrorCode_OK:
			// The PeerSession committed the state and the inbox record.
			in.deps.stats.decrypted.Add(1)
			rec := req.Inbox
			rec.Payload = r.Plaintext
			in.deliver(rec)
		case messages.ErrorCode_DUPLICATE:
			in.deps.stats.duplicates.Add(1)
		case messages.ErrorCode_CLOSED:
			// Not decrypted, and not a failure: the delivery is not
			// taken, and comes again once the installation is hosted.
		default:
			in.deps.stats.decryptFailures.Add(1)
			in.deps.log.Debug("decrypt failed", "installation", in.id, "from", pm.InstallationId, "code", code.String(), "detail", detail)
		}
		retry := code == messages.ErrorCode_TOO_MANY_SKIPPED && in.refuseAhead(env.EnvelopeId)
		processed := func() {
			if respondTo != nil {
				ctx.Send(respondTo, &messages.Processed{Error: code, Detail: detail, RetryLater: retry})
			}
		}
		if retry {
			processed()
			return
		}
		if code == messages.ErrorCode_NO_SESSION || code == messages.ErrorCode_INVALID_MAC || code == messages.ErrorCode_TOO_MANY_SKIPPED {
			// The sender uses a session we do not have (we lost our state,
			// or it is another of our installations' session): answer with
			// our current bundle so it starts a new one (account recovery;
			// rate-limited).
			in.advertise(ctx, from, "decrypt failed: "+code.String(), func(int, error) { processed() })
			return
		}
		processed()
	})
}

// refuseAhead counts a refusal of a message too far ahead of its chain
// (ratchet.ErrTooManySkipped) and reports whether it may be refused again
// as "not taken yet": the gap closes as the messages before it arrive (a
// backlog offered out of order). After MaxAheadRefusals it is dropped: the
// messages before it are not coming, and the peer gets our bundle to start
// over. The count is kept in memory, bounded like the replay cache.
func (in *installation) refuseAhead(envelopeID []byte) bool {
	if in.aheadRefusals == nil || len(in.aheadRefusals) >= in.deps.cfg.ReplayCacheSize {
		in.aheadRefusals = make(map[string]int)
	}
	k := string(envelopeID)
	in.aheadRefusals[k]++
	if in.aheadRefusals[k] > in.deps.cfg.MaxAheadRefusals {
		delete(in.aheadRefusals, k)
		return false
	}
	return true
}

// advertise sends a peer installation an empty DH message that carries our
// bundle, at most once per BundleAdvertInterval (status-compat.md §10.3:
// Status accepts it; the payload decrypts to nothing and the bundle is
// stored). done runs once the advert is published (in the outbox, with a
// transport that confirms delivery: queued is 1 if it waits its turn there),
// or skipped (nil), or with why it was not.
func (in *installation) advertise(ctx actor.Context, to deviceKey, why string, done func(queued int, err error)) {
	// Rate-limited per identity: the advert goes to the identity's topic
	// (every installation of it reads it), and the installation id is the
	// sender's to choose, so keying on it would let a peer lift the limit.
	now := in.deps.cfg.Clock()
	if last, ok := in.lastAdvert[to.identity]; ok && now.Sub(last) < in.deps.cfg.BundleAdvertInterval {
		done(0, nil)
		return
	}
	if len(in.lastAdvert) >= in.deps.cfg.ReplayCacheSize {
		clear(in.lastAdvert) // bounded: many peers only forget their rate limit
	}
	in.lastAdvert[to.identity] = now
	in.deps.stats.adverts.Add(1)
	in.deps.log.Debug("advertising bundle", "installation", in.id, "to", to.installation, "why", why)
	in.withBundle(ctx, func(b *messages.BundleReply) {
		failed := func(err error) {
			in.deps.log.Warn("bundle advert not published", "installation", in.id, "err", err)
			// Not rate-limited by an advert that never left.
			if last, ok := in.lastAdvert[to.identity]; ok && last.Equal(now) {
				delete(in.lastAdvert, to.identity)
			}
			done(0, err)
		}
		if b == nil || b.Bundle == nil {
			// The publisher did not answer: an advert without a bundle
			// would reset the peer's sessions and teach it nothing.
			failed(fmt.Errorf("%w: no bundle from the BundlePublisher", ErrTimeout))
			return
		}
		ek, payload, err := dhfallback.Seal(in.deps.cfg.Rand, to.identity, nil)
		if err != nil {
			failed(err)
			return
		}
		pm := &messages.ProtocolMessage{
			InstallationId:   in.id,
			Bundles:          bundles(b),
			EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{noneKey: {DhHeader: &messages.DHHeader{Key: ek[:]}, Payload: payload}},
		}
		env, err := in.seal(transport.PartitionedTopic(to.identity), &to.identity, pm)
		if err != nil {
			failed(err)
			return
		}
		if _, confirms := in.deps.tr.(transport.Confirmer); confirms {
			// Kept in the outbox like a send: offered again while the
			// peer's node is down or refuses it (a stopping installation
			// answers CLOSED), and after a restart. Published once, its
			// sender would be rate-limited for BundleAdvertInterval.
			in.publishKept(ctx, []*messages.Envelope{env}, func(queued int, err error) {
				if err != nil {
					failed(err)
					return
				}
				done(queued, nil)
			})
			return
		}
		in.deps.stats.published.Add(1)
		if err := in.deps.tr.Publish(env); err != nil {
			failed(err)
			return
		}
		done(0, nil)
	})
}

// ---- sending ----

// sendGroup is one ProtocolMessage being assembled: the peer's copy or the
// copy for our own paired installations.
type sendGroup struct {
	to      keys.PublicKey
	entries map[string]*messages.EncryptedMessageProtocol
	failed  []string
}

// send encrypts for the peer's active installations and our own paired
// ones, waits until every new state is durable (each PeerSession commits
// before answering), then publishes (status-compat.md §8.1).
func (in *installation) send(ctx actor.Context, cmd *messages.SendCommand) {
	respondTo := ctx.Sender()
	report := &messages.SendReport{}
	reply := func() {
		if respondTo != nil {
			ctx.Send(respondTo, report)
		}
	}
	if cmd.PublicTopic != "" {
		in.withBundle(ctx, func(b *messages.BundleReply) {
			pm := &messages.ProtocolMessage{InstallationId: in.id, Bundles: bundles(b), PublicMessage: cmd.Payload}
			if err := in.publishOn(transport.PublicTopic(cmd.PublicTopic), nil, pm); err != nil {
				report.Error, report.Detail = messages.ErrorCode_INTERNAL, err.Error()
			} else {
				report.Envelopes = 1
			}
			reply()
		})
		return
	}
	peer, err := keys.ParsePublicKey(cmd.PeerIdentity)
	if err != nil {
		report.Error, report.Detail = messages.ErrorCode_MALFORMED, err.Error()
		reply()
		return
	}
	if cmd.Advertise {
		delete(in.lastAdvert, peer)
		in.advertise(ctx, deviceKey{peer, ""}, "requested", func(queued int, err error) {
			if err != nil {
				report.Error, report.Detail = codeOf(err), err.Error()
			} else {
				report.Envelopes, report.Queued = 1, int32(queued)
			}
			reply()
		})
		return
	}
	groups := []*sendGroup{{to: peer, entries: map[string]*messages.EncryptedMessageProtocol{}}}
	var ownDevices []*messages.DeviceRecord
	if peer != in.identity.Public {
		// Our own paired installations get a message of their own; with
		// none there is nothing to send them (no group, no DH fallback).
		if ownDevices = in.activeDevices(in.identity.Public); len(ownDevices) > 0 {
			groups = append(groups, &sendGroup{to: in.identity.Public, entries: map[string]*messages.EncryptedMessageProtocol{}})
		}
	}
	// Ask for the bundle first: a rotation it triggers changes our current
	// SPK only for the next message (Status encrypts before addBundle, §4.2).
	bundleReply, bundleF := in.bundleNow(ctx)
	type pendingEncrypt struct {
		g   *sendGroup
		req *messages.EncryptRequest
	}
	var pending []pendingEncrypt
	own := in.currentPreKey()
	for i, g := range groups {
		devices := ownDevices
		if i == 0 {
			devices = in.activeDevices(g.to)
		}
		for _, d := range devices {
			req := &messages.EncryptRequest{PeerInstallationId: d.InstallationId, PeerSignedPreKey: d.SignedPreKey, OwnSignedPreKey: own[:], Payload: cmd.Payload}
			pending = append(pending, pendingEncrypt{g, req})
		}
	}
	remaining := len(pending)
	// retryable: an encrypt that failed for a reason a retry may not meet
	// (its commit failed or timed out, or the installation is stopping):
	// when no installation could be encrypted for, the send reports it,
	// not NO_SESSION (a verdict on the peer: ErrNotDelivered).
	var retryable *messages.EncryptResponse
	if bundleF != nil {
		remaining++
	}
	var envs []*messages.Envelope
	finish := func() {
		remaining--
		if remaining > 0 {
			return
		}
		for i, g := range groups {
			if len(g.entries) == 0 {
				if i > 0 || len(g.failed) > 0 {
					continue // no paired device; or every installation failed
				}
				// No installation of the peer is known: DH fallback under
				// "none" (status-compat.md §7).
				ek, payload, err := dhfallback.Seal(in.deps.cfg.Rand, g.to, cmd.Payload)
				if err != nil {
					report.Error, report.Detail = codeOf(err), err.Error()
					continue
				}
				g.entries[noneKey] = &messages.EncryptedMessageProtocol{DhHeader: &messages.DHHeader{Key: ek[:]}, Payload: payload}
				report.DhFallback = true
			}
			pm := &messages.ProtocolMessage{InstallationId: in.id, Bundles: bundles(bundleReply), EncryptedMessage: g.entries}
			env, err := in.seal(transport.PartitionedTopic(g.to), &g.to, pm)
			if err != nil {
				report.Error, report.Detail = messages.ErrorCode_INTERNAL, err.Error()
				continue
			}
			envs = append(envs, env)
		}
		if report.Error == messages.ErrorCode_OK && len(report.Failed) > 0 && len(report.Installations) == 0 && !report.DhFallback {
			report.Error, report.Detail = messages.ErrorCode_NO_SESSION, "no installation of the peer could be encrypted for"
			if retryable != nil {
				report.Error, report.Detail = retryable.Error, retryable.Detail
			}
		}
		if len(envs) == 0 {
			reply()
			return
		}
		// The states that produced these ciphertexts are durable (each
		// PeerSession commits before it answers). A send is accepted once
		// its envelopes are published or in the outbox.
		if _, confirms := in.deps.tr.(transport.Confirmer); !confirms {
			// A transport that does not confirm delivery takes the envelope
			// when Publish returns: publish first, and only what it refused
			// goes to the outbox, to be published again (no outbox record
			// is made, and no commit, on the common path). Once it refused
			// one, later sends queue behind it in the outbox (outbox.go:
			// order matters to the receiver).
			var kept []*messages.Envelope
			var refused error
			for _, env := range envs {
				if !in.unsent && len(kept) == 0 {
					in.deps.stats.published.Add(1)
					err := in.deps.tr.Publish(env)
					if err == nil {
						report.Envelopes++
						continue
					}
					if errors.Is(err, transport.ErrBadEnvelope) {
						// Refused for good: kept, it would hold up every
						// later send.
						report.Error, report.Detail = messages.ErrorCode_INTERNAL, err.Error()
						continue
					}
					refused = err
				}
				kept = append(kept, env)
			}
			if len(kept) > 0 {
				// Refused for now, or behind a refused one: accepted all
				// the same once in the outbox (Queued), published later.
				writes, _, err := in.outboxWrites(kept)
				if err == nil {
					err = in.deps.commit(writes)
				}
				if err != nil {
					report.Error, report.Detail = messages.ErrorCode_STORE, "not published and not kept for a retry: "+err.Error()
					if refused != nil {
						report.Detail += " (publish: " + refused.Error() + ")"
					}
				} else {
					in.unsent = true
					report.Envelopes += int32(len(kept))
					report.Queued += int32(len(kept))
					if refused != nil {
						in.deps.log.Debug("publish refused; kept in the outbox", "installation", in.id, "err", refused)
					}
				}
				in.scheduleRetry(ctx)
			}
			reply()
			return
		}
		// A confirming transport (the network): the outbox first, so that a
		// crash or a peer that is down never loses an accepted send.
		in.publishKept(ctx, envs, func(queued int, err error) {
			if err != nil {
				report.Error, report.Detail = codeOf(err), err.Error()
			} else {
				report.Envelopes += int32(len(envs))
				report.Queued += int32(queued)
			}
			reply()
		})
	}
	if bundleF != nil {
		ctx.ReenterAfter(bundleF, func(res any, err error) {
			bundleReply, _ = res.(*messages.BundleReply)
			in.keepBundle(bundleReply)
			finish()
		})
	}
	if remaining == 0 {
		remaining = 1
		finish() // nothing to wait for (no device of the peer known)
	}
	for _, p := range pending {
		in.ask(ctx, p.g.to, p.req, func(res any, err error) {
			r, _ := res.(*messages.EncryptResponse)
			switch {
			case err == nil && r != nil && r.Error == messages.ErrorCode_OK:
				p.g.entries[r.PeerInstallationId] = r.Message
				report.Installations = append(report.Installations, r.PeerInstallationId)
			case r != nil:
				p.g.failed = append(p.g.failed, r.PeerInstallationId)
				report.Failed = append(report.Failed, r.PeerInstallationId)
				switch r.Error {
				case messages.ErrorCode_STORE, messages.ErrorCode_TIMEOUT, messages.ErrorCode_CLOSED:
					retryable = r
				}
				in.deps.log.Debug("encrypt failed", "installation", in.id, "to", r.PeerInstallationId, "code", r.Error.String(), "detail", r.Detail)
			default:
				// No answer: the installation stopping (asks.release:
				// ErrClosed) or an overdue ask (ErrTimeout). The encrypt
				// may have been committed, its ciphertext is not sent: a
				// retry encrypts anew, with the next key.
				p.g.failed = append(p.g.failed, "?")
				report.Failed = append(report.Failed, "?")
				code := messages.ErrorCode_TIMEOUT
				if errors.Is(err, ErrClosed) {
					code = messages.ErrorCode_CLOSED
				}
				retryable = &messages.EncryptResponse{Error: code, Detail: fmt.Sprint("encrypt not answered: ", err)}
			}
			finish()
		})
	}
}

// withBundle runs fn with the bundle to attach now.
func (in *installation) withBundle(ctx actor.Context, fn func(*messages.BundleReply)) {
	b, f := in.bundleNow(ctx)
	if f == nil {
		fn(b)
		return
	}
	ctx.ReenterAfter(f, func(res any, err error) {
		b, _ := res.(*messages.BundleReply)
		in.keepBundle(b)
		fn(b)
	})
}

// bundleNow returns the bundle to attach: the one the BundlePublisher signed
// last if it is younger than BundleResignInterval (the publisher would
// return that very bundle), or else a request to the publisher, which
// re-signs it, or rotates the prekey first when it expired.
func (in *installation) bundleNow(ctx actor.Context) (*messages.BundleReply, actor.Future) {
	now := in.deps.cfg.Clock()
	if in.bundle != nil && fresh(now, in.bundleAt, in.deps.cfg.BundleResignInterval) {
		return in.bundle, nil
	}
	return nil, ctx.RequestFuture(in.publisher, &messages.BundleRequest{NowUnixNano: now.UnixNano()}, in.deps.cfg.RequestTimeout)
}

// keepBundle caches a bundle the publisher signed just now.
func (in *installation) keepBundle(b *messages.BundleReply) {
	if b == nil || b.Bundle == nil {
		in.bundle = nil
		return
	}
	in.bundle, in.bundleAt = b, time.Unix(0, b.Bundle.Timestamp)
}

func bundles(b *messages.BundleReply) []*messages.Bundle {
	if b == nil || b.Bundle == nil {
		return nil
	}
	return []*messages.Bundle{b.Bundle}
}

// publishOn sends a ProtocolMessage on a topic, without the outbox (public
// chats: nothing to confirm).
func (in *installation) publishOn(topic string, to *keys.PublicKey, pm *messages.ProtocolMessage) error {
	env, err := in.seal(topic, to, pm)
	if err != nil {
		return err
	}
	in.deps.stats.published.Add(1)
	return in.deps.tr.Publish(env)
}

// seal wraps a ProtocolMessage in an envelope signed by our identity.
func (in *installation) seal(topic string, to *keys.PublicKey, pm *messages.ProtocolMessage) (*messages.Envelope, error) {
	payload, err := proto.Marshal(pm)
	if err != nil {
		return nil, err
	}
	return transport.SealWith(in.identity, topic, to, payload)
}

// ---- device registry ----

func (in *installation) listDevices(q *messages.DevicesQuery) *messages.DeviceList {
	out := &messages.DeviceList{}
	var devices []*messages.DeviceRecord
	if id, err := keys.ParsePublicKey(q.Identity); err == nil {
		for _, d := range in.devices.of(id) {
			devices = append(devices, d)
		}
	} else if len(q.Identity) == 0 {
		devices = in.devices.all()
	}
	for _, d := range devices {
		out.Devices = append(out.Devices, proto.Clone(d).(*messages.DeviceRecord))
	}
	slices.SortFunc(out.Devices, func(a, b *messages.DeviceRecord) int {
		if c := bytes.Compare(a.Identity, b.Identity); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.InstallationId), []byte(b.InstallationId))
	})
	return out
}

// setEnabled approves (pairs) or disables a device. Disabling one of our own
// installations removes it from our bundle (status-compat.md §9).
func (in *installation) setEnabled(ctx actor.Context, m *messages.SetDeviceEnabled) *messages.Ack {
	id, err := keys.ParsePublicKey(m.Identity)
	if err != nil {
		return &messages.Ack{Error: messages.ErrorCode_MALFORMED, Detail: err.Error()}
	}
	devices := in.devices.of(id)
	d := devices[m.InstallationId]
	if d == nil {
		return &messages.Ack{Error: messages.ErrorCode_NO_SESSION, Detail: "unknown device"}
	}
	d = proto.Clone(d).(*messages.DeviceRecord)
	d.Enabled = m.Enabled
	v, err := proto.Marshal(d)
	if err == nil {
		err = in.deps.commit([]persistence.Write{{Key: persistence.DeviceKey(in.id, m.Identity, m.InstallationId), Value: v},
			peerMark(in.id, m.Identity, persistence.MarkDevices)})
	}
	if err != nil {
		return &messages.Ack{Error: messages.ErrorCode_STORE, Detail: err.Error()}
	}
	devices[m.InstallationId] = d
	if id == in.identity.Public {
		in.pairedChanged(ctx)
	}
	return &messages.Ack{}
}

// importBundle takes a bundle obtained out of band (a QR code, the
// contact-code topic): it is verified and stored like an attached one.
func (in *installation) importBundle(ctx actor.Context, m *messages.ImportBundle) *messages.Ack {
	v, err := bundle.Verifier{MaxEntries: in.deps.cfg.MaxBundleEntries}.Verify(m.Bundle)
	if err != nil {
		in.deps.stats.badBundles.Add(1)
		return &messages.Ack{Error: messages.ErrorCode_MALFORMED, Detail: err.Error()}
	}
	in.storeBundle(ctx, v)
	// The registry changed outside the sender's own bundles (a device may
	// have been trimmed): its next bundle is verified, not skipped.
	delete(in.verified, v.Identity)
	return &messages.Ack{}
}

// accept commits a message that no PeerSession handled (DH fallback, public,
// unwrapped) to the inbox, then delivers it.
//
// replay, when set, is the digest that identifies the message for the
// replay cache: it is committed with the inbox record, so that the message
// is recognised after a restart too.
func (in *installation) accept(rec *messages.InboxRecord, replay []byte) error {
	rec.ReceivedUnixNano = in.deps.cfg.Clock().UnixNano()
	v, err := proto.Marshal(rec)
	writes := []persistence.Write{{Key: persistence.InboxKey(in.id, rec.Id), Value: v}}
	if replay != nil {
		writes = append(writes, persistence.Write{Key: persistence.ReplayKey(in.id, replay), Value: []byte{1}})
	}
	if err == nil {
		err = in.deps.commit(writes)
	}
	if err != nil {
		in.deps.log.Warn("inbox commit failed; message dropped", "installation", in.id, "err", err)
		return err
	}
	if replay != nil {
		if evicted, ok := in.seen.add([32]byte(replay)); ok {
			in.deps.commitLater([]persistence.Write{{Key: persistence.ReplayKey(in.id, evicted[:]), Delete: true}})
		}
	}
	in.deliver(rec)
	return nil
}

// acceptOnce delivers a message that no ratchet protects from replay (public,
// unwrapped) once per envelope, and answers the Engine; a message that could
// not be committed is reported, so a transport that acknowledges deliveries
// lets the sender try again.
func (in *installation) acceptOnce(ctx actor.Context, env *messages.IncomingEnvelope, rec *messages.InboxRecord) {
	digest := keys.Keccak256(env.EnvelopeId)
	if !in.fresh(digest) {
		in.deps.stats.duplicates.Add(1)
		ctx.Respond(&messages.Processed{Error: messages.ErrorCode_DUPLICATE})
		return
	}
	if err := in.accept(rec, digest[:]); err != nil {
		ctx.Respond(&messages.Processed{Error: messages.ErrorCode_STORE, Detail: err.Error()})
		return
	}
	ctx.Respond(&messages.Processed{})
}

// fresh reports whether a DH-fallback or public message was not delivered
// before (the bounded cache, filled from the store at start).
func (in *installation) fresh(digest [32]byte) bool { return !in.seen.has(digest) }

// loadReplays fills the replay cache from the store.
func (in *installation) loadReplays() {
	err := in.deps.store.Scan(persistence.ReplayPrefix(in.id), func(k, _ []byte) error {
		if len(k) >= 32 {
			if evicted, ok := in.seen.add([32]byte(k[len(k)-32:])); ok {
				in.deps.commitLater([]persistence.Write{{Key: persistence.ReplayKey(in.id, evicted[:]), Delete: true}})
			}
		}
		return nil
	})
	if err != nil {
		in.deps.log.Warn("replay records not loaded", "err", err)
	}
}

// deliver hands a committed inbox record to the application.
func (in *installation) deliver(rec *messages.InboxRecord) {
	in.deps.deliver(Message{
		Kind: Kind(rec.Kind), Sender: keys.PublicKey(pad33(rec.Sender)), SenderInstallation: rec.SenderInstallation,
		Recipient: in.identity.Public, RecipientInstallation: in.id,
		Payload: rec.Payload, ID: rec.Id, Topic: rec.Topic, NoForwardSecrecy: rec.NoForwardSecrecy,
	})
}

// redeliver hands every unacknowledged inbox record to the application again
// and prepares the outbox (after a restart) for its first pass.
func (in *installation) redeliver(ctx actor.Context) {
	in.sweepInline()
	err := in.deps.store.Scan(persistence.InboxPrefix(in.id), func(k, v []byte) error {
		var rec messages.InboxRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			in.deps.log.Warn("inbox record unreadable; skipped", "key", fmt.Sprintf("%x", k), "err", err)
			in.deps.stats.corrupt.Add(1)
			return nil
		}
		in.deps.stats.redelivered.Add(1)
		in.deliver(&rec)
		return nil
	})
	if err != nil {
		in.deps.log.Warn("inbox scan failed", "err", err)
	}
	// The outbox is published once the engine has subscribed every
	// installation it loads (LoadInstallations sends RetryOutbox), so that
	// a message between two of its own installations finds its receiver;
	// until then new sends wait behind the stored ones.
	if in.restoreOutboxSeq() > 0 {
		in.backlog, in.unsent = true, true
	}
}

// ack deletes the inbox record of a message the application has (queued,
// not waited for: losing it in a crash only delivers the message again),
// or notes the acknowledgement of one kept in its session's record, which
// the session's next record write leaves out (inline.go).
func (d *deps) ack(local string, id []byte) {
	if d.inline.ack(local, id) {
		return
	}
	d.commitLater([]persistence.Write{{Key: persistence.InboxKey(local, id), Delete: true}})
}

// replayCache is a bounded set of recent message hashes, oldest evicted
// first. It grows as it is used (most installations see few DH or public
// messages), up to its bound.
type replayCache struct {
	set   map[[32]byte]struct{}
	order [][32]byte // ring once full
	next  int
	max   int
}

func newReplayCache(n int) *replayCache {
	return &replayCache{set: make(map[[32]byte]struct{}), max: n}
}

func (c *replayCache) has(h [32]byte) bool {
	_, ok := c.set[h]
	return ok
}

// add records h; it returns the hash it evicted to make room, if any.
func (c *replayCache) add(h [32]byte) (evicted [32]byte, ok bool) {
	if c.has(h) {
		return evicted, false
	}
	if len(c.order) < c.max {
		c.order = append(c.order, h)
	} else {
		evicted, ok = c.order[c.next], true
		delete(c.set, evicted)
		c.order[c.next] = h
		c.next = (c.next + 1) % c.max
	}
	c.set[h] = struct{}{}
	return evicted, ok
}
