package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/actors/deadline"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// Kind says how a received message reached us.
type Kind int

const (
	// KindDirect: a 1:1 message, decrypted by the Double Ratchet (or, with
	// NoForwardSecrecy, by the DH fallback).
	KindDirect Kind = iota
	// KindPublic: a public-chat message (cleartext, 5/SECURE-TRANSPORT
	// "public_message").
	KindPublic
	// KindUnwrapped: a payload that is not a ProtocolMessage, passed on as
	// Status does (status-compat.md §1).
	KindUnwrapped
)

func (k Kind) String() string {
	switch k {
	case KindDirect:
		return "direct"
	case KindPublic:
		return "public"
	case KindUnwrapped:
		return "unwrapped"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Message is a received message handed to the application.
type Message struct {
	Kind                  Kind
	Sender                keys.PublicKey // from the transport signature
	SenderInstallation    string
	Recipient             keys.PublicKey
	RecipientInstallation string
	Payload               []byte
	// ID is the transport envelope id; the same envelope delivered twice
	// has the same ID.
	ID               []byte
	Topic            string
	NoForwardSecrecy bool // DH fallback
}

// Stats are the engine's counters.
type Stats struct {
	Published, Decrypted, Duplicates, DecryptFailures, Malformed, BadBundles int64
	NotForDevice, Adverts, Unwrapped, Unsupported, X3DHActive, X3DHPassive   int64
	Rotations, Corrupt, BadEnvelopes                                         int64
	// BundlesVerified counts the attached bundles whose signature was
	// checked; BundlesUnchanged those taken for the sender's last verified
	// one within Config.BundleRecheckInterval and not checked.
	BundlesVerified, BundlesUnchanged int64
	// Group commit: transactions, writes, time spent, largest batch (in
	// requests).
	Commits, CommittedWrites, CommitNanos, MaxBatch int64
	// SessionsActive is the number of PeerSession actors in memory;
	// Passivations counts idle ones stopped.
	SessionsActive, Passivations int64
	// SupervisorPassivations counts idle SessionSupervisors stopped.
	SupervisorPassivations int64
	// Redelivered: unacknowledged messages delivered again after a restart;
	// OutboxResent: accepted sends published after a restart.
	Redelivered, OutboxResent int64
	// ReservedSends counts encrypts that needed no commit: their key was
	// below a durable reservation of the sending chain (SendReserve).
	ReservedSends int64
	// CommitBatch and CommitLatency are histograms of the group commits:
	// CommitBatch[i] counts those of at most CommitBatchBuckets[i] writes
	// (the last, of more), CommitLatency[i] those that took at most
	// CommitLatencyBuckets[i] seconds (the last, longer). Not cumulative.
	CommitBatch   [len(CommitBatchBuckets) + 1]int64
	CommitLatency [len(CommitLatencyBuckets) + 1]int64
	// MailboxDepth is the number of messages queued to the engine's actors
	// and not yet taken (a gauge): it grows when the actors fall behind.
	MailboxDepth int64
	// ActorFailures counts panics in the engine's actors: recovered in
	// place (a PeerSession or SessionSupervisor resets from its durable
	// state; a reset that panics again counts again), escalated to the
	// actor's supervisor, or raised by the store in the Committer. Not
	// counted: the networked transport's own actors. Nothing a peer sends
	// should ever raise it.
	ActorFailures int64
}

type stats struct {
	published, decrypted, duplicates, decryptFailures, malformed, badBundles atomic.Int64
	notForDevice, adverts, unwrapped, unsupported, x3dhActive, x3dhPassive   atomic.Int64
	rotations, corrupt, badEnvelopes                                         atomic.Int64
	bundlesVerified, bundlesUnchanged                                        atomic.Int64
	commits, committedWrites, commitNanos, maxBatch                          atomic.Int64
	sessionsActive, passivations, redelivered, outboxResent                  atomic.Int64
	supervisorPassivations, actorFailures, reservedSends                     atomic.Int64
	commitBatch                                                              [len(CommitBatchBuckets) + 1]atomic.Int64
	commitLatency                                                            [len(CommitLatencyBuckets) + 1]atomic.Int64
	// queued is MailboxDepth in shards (the engine's mailboxes take one
	// each, in turn), so that the actors do not all count on one cache
	// line.
	queued    [queuedShards]paddedInt64
	nextShard atomic.Uint32
}

const queuedShards = 16

// Upper bounds of the commit histograms' buckets (Stats.CommitBatch: writes;
// Stats.CommitLatency: seconds).
var (
	CommitBatchBuckets   = [...]float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}
	CommitLatencyBuckets = [...]float64{0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}
)

// bucketOf is the index of the first bound v does not exceed, or
// len(bounds) when it exceeds them all.
func bucketOf(v float64, bounds []float64) int {
	for i, b := range bounds {
		if v <= b {
			return i
		}
	}
	return len(bounds)
}

type paddedInt64 struct {
	atomic.Int64
	_ [56]byte
}

func (s *stats) mailboxDepth() int64 {
	var n int64
	for i := range s.queued {
		n += s.queued[i].Load()
	}
	return n
}

// deps is what every actor of one engine shares; all of it is safe for
// concurrent use.
type deps struct {
	cfg       Config
	store     persistence.Store
	tr        transport.Transport
	log       *slog.Logger
	deliver   func(Message)
	stats     *stats
	root      *actor.RootContext
	committer *actor.PID
	pool      *workerPool
	watch     *topicWatch
	lates     lateCommits
	inline    inlineInbox

	// commitWaits times out commit waits (actors/deadline).
	commitWaits atomic.Pointer[deadline.Clock]

	// The engine spawns one SessionSupervisor per peer identity and one
	// PeerSession per conversation, each kept while it is active: with a
	// Props and a producer closure of its own, a child costs about 900
	// bytes more per active conversation. Instead every such child is
	// spawned from childProps, whose producer takes the actor spawnChild
	// placed in handoff. Spawn calls the producer synchronously, and
	// spawnMu holds the slot for that one call. The producer is never called
	// again for the same child: a child's panic is recovered in place (the
	// child reloads its durable state, as a restart would), and the parents
	// stop, never restart, a child that fails anyway (failChild).
	spawnMu    sync.Mutex
	handoff    actor.Actor
	childProps *actor.Props

	// peerMarks: every stored device and session of this store has its
	// persistence.PeerKey (see peerMarksKept).
	peerMarks bool
}

// errStopScan ends a Scan early.
var errStopScan = errors.New("actors: scan stopped")

// peerMarksKept reports whether the store keeps a persistence.PeerKey for
// every peer with a stored device or session: one that has PeerMarksKey, or
// an empty one, which gets it now. A store written before the marks keeps
// being scanned for every new peer.
func peerMarksKept(store persistence.Store, log *slog.Logger) bool {
	_, err := store.Get(persistence.PeerMarksKey())
	if err == nil {
		return true
	}
	if !errors.Is(err, persistence.ErrNotFound) {
		log.Warn("store: peer marks unknown; peers will be scanned", "err", err)
		return false
	}
	empty := true
	err = store.Scan(nil, func(_, _ []byte) error {
		empty = false
		return errStopScan
	})
	if !empty || (err != nil && !errors.Is(err, errStopScan)) {
		return false
	}
	return store.Commit([]persistence.Write{{Key: persistence.PeerMarksKey(), Value: []byte{1}}}) == nil
}

// knownPeer reports whether local may have stored devices or sessions
// (kind) of a peer identity: false only when the store keeps peer marks and
// has none for it (a point lookup, usually answered by a bloom filter), so
// that a first contact reads no tree block.
func (d *deps) knownPeer(local string, identity []byte, kind byte) bool {
	if !d.peerMarks {
		return true
	}
	_, err := d.store.Get(persistence.PeerKey(local, identity, kind))
	return !errors.Is(err, persistence.ErrNotFound)
}

// peerMark is the write of a peer's mark of one kind: in every commit of a
// device record, and in the commit of a session's first record.
func peerMark(local string, identity []byte, kind byte) persistence.Write {
	return persistence.Write{Key: persistence.PeerKey(local, identity, kind), Value: []byte{1}}
}

// props are the Props of every engine actor: they run on the engine's
// worker pool, with the engine's mailbox.
func (d *deps) props(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer, actor.WithDispatcher(d.pool), actor.WithMailbox(d.newMailbox))
}

// spawnChild starts a as a child of ctx on the shared childProps.
func (d *deps) spawnChild(ctx actor.Context, a actor.Actor) *actor.PID {
	d.spawnMu.Lock()
	defer d.spawnMu.Unlock()
	d.handoff = a
	pid := ctx.Spawn(d.childProps)
	d.handoff = nil
	return pid
}

// produceChild is childProps' producer.
func (d *deps) produceChild() actor.Actor {
	a := d.handoff
	d.handoff = nil
	if a == nil {
		// Not reachable (see childProps): an actor without its parameters
		// stops at once rather than run as some other child.
		d.log.Error("child actor produced outside spawnChild; stopped")
		return actor.ReceiveFunc(func(c actor.Context) {
			if _, ok := c.Message().(*actor.Started); ok {
				c.Stop(c.Self())
			}
		})
	}
	return a
}

// later is the PID of ctx's actor for a message sent later, from a timer or
// a transport's callback: a copy without the process protoactor caches in a
// PID once it has been used. The cached process is the actor's mailbox and
// context, and so the whole actor: a pending passivation Tick (up to a
// minute) kept every stopped installation in memory, about 1 GB after 24 s
// of the x3dh benchmark, which stops an account per message. A message to
// an actor that has stopped goes to the dead letters, as before.
func later(ctx actor.Context) *actor.PID {
	self := ctx.Self()
	return actor.NewPID(self.Address, self.Id)
}

// failChild is the supervision of the children spawned by spawnChild: a
// failure that escaped the child's own recovery stops it (it is never
// restarted, which would call produceChild again). The parent's children
// registry spawns a fresh one, from the durable state, on the next request.
func failChild(sup actor.Supervisor, child *actor.PID, reason any, log *slog.Logger) {
	log.Error("child actor failed; stopped", "child", child.Id, "reason", fmt.Sprint(reason))
	sup.StopChildren(child)
}

// recovered counts and logs a panic recovered in an actor's Receive and
// returns it as an error; the actor then resets itself in place.
func (d *deps) recovered(r any, who string) error {
	d.stats.actorFailures.Add(1)
	err := fmt.Errorf("%s failed: %v", who, r)
	d.log.Error("actor failed; restarting from its durable state", "actor", who, "reason", fmt.Sprint(r), "stack", string(debug.Stack()))
	return err
}

// newMailbox is the engine actors' mailbox; a panic that escapes an
// actor's Receive is counted in ActorFailures before it goes to the
// actor's supervisor, and its queued messages count in MailboxDepth.
func (d *deps) newMailbox() actor.Mailbox {
	shard := &d.stats.queued[d.stats.nextShard.Add(1)%queuedShards].Int64
	return &mailbox{failures: &d.stats.actorFailures, depth: shard}
}

// Engine owns the actor system and routes transport deliveries to the
// Installations it hosts.
type Engine struct {
	deps    *deps
	system  *actor.ActorSystem
	replies *replySlots // Request's and gateway's reply addresses

	mu            sync.RWMutex
	installations map[string]*hosted
	closed        bool
	creating      sync.WaitGroup // CreateInstallation calls committing their record
	// stopped: the Committer is stopped. Between Quiesce (closed) and
	// Close (stopped) installations keeps the stopped installations, whose
	// Acks are still written.
	stopped     bool
	quiesceOnce sync.Once
	closeOnce   sync.Once
	unwatch     func() // stops the transport.Watcher's news
}

type hosted struct {
	pid      *actor.PID
	identity keys.PublicKey
	cancel   []func()
}

// ErrClosed: the engine was closed.
var ErrClosed = errors.New("actors: engine closed")

// ErrUnknownInstallation: no such installation is hosted.
var ErrUnknownInstallation = errors.New("actors: unknown installation")

// NewEngine starts an engine on a store and a transport. deliver receives
// every message for the application; it is called from actor goroutines and
// must not block.
func NewEngine(cfg Config, store persistence.Store, tr transport.Transport, deliver func(Message)) *Engine {
	cfg = cfg.withDefaults()
	d := &deps{cfg: cfg, store: store, tr: tr, log: cfg.Logger, deliver: deliver, stats: &stats{}, pool: newWorkerPool(0, 0)}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return cfg.Logger }))
	d.root = sys.Root
	d.childProps = d.props(d.produceChild)
	d.peerMarks = peerMarksKept(store, cfg.Logger)
	d.committer = sys.Root.Spawn(d.props(func() actor.Actor { return &committer{deps: d} }))
	d.watch = newTopicWatch(sys.Root)
	// Made here, so that Close stops it (deps.commitClock makes one on first
	// use for the deps that tests build).
	d.commitWaits.Store(deadline.New(cfg.CommitTimeout))
	return &Engine{deps: d, system: sys, replies: &replySlots{sys: sys, waits: deadline.New(cfg.RequestTimeout)}, installations: make(map[string]*hosted), unwatch: d.watch.start(tr)}
}

// CreateInstallation creates a new hosted device. identity nil generates a
// new identity; otherwise the device is a new installation of that identity
// (another device, or an account recovered on an empty store).
func (e *Engine) CreateInstallation(identity *keys.PrivateKey) (string, keys.PublicKey, error) {
	var idk keys.KeyPair
	var err error
	if identity == nil {
		idk, err = keys.GenerateKey(e.deps.cfg.Rand)
	} else {
		idk, err = identity.KeyPair()
	}
	if err != nil {
		return "", keys.PublicKey{}, err
	}
	spk, err := keys.GenerateKey(e.deps.cfg.Rand)
	if err != nil {
		return "", keys.PublicKey{}, err
	}
	u, err := uuid.NewRandomFromReader(e.deps.cfg.Rand)
	if err != nil {
		return "", keys.PublicKey{}, err
	}
	now := e.deps.cfg.Clock().UnixNano()
	rec := &messages.InstallationRecord{
		IdentityPrivate: idk.Private[:],
		InstallationId:  u.String(), // UUID v4, lowercase (status-compat.md §2)
		PreKeys:         []*messages.OwnPreKey{{PrivateKey: spk.Private[:], PublicKey: spk.Public[:], Version: 1, CreatedUnixNano: now}},
		CreatedUnixNano: now,
	}
	v, err := proto.Marshal(rec)
	if err != nil {
		return "", keys.PublicKey{}, err
	}
	// Through the Committer: concurrent account creations share its group
	// commits (Badger syncs once per transaction; the x3dh benchmark,
	// which creates an account per message, made one sync per account).
	// Close waits for the creations under way before it stops the
	// Committer.
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return "", keys.PublicKey{}, ErrClosed
	}
	e.creating.Add(1)
	e.mu.Unlock()
	defer e.creating.Done()
	if err := e.deps.commit([]persistence.Write{{Key: persistence.InstallationKey(rec.InstallationId), Value: v}}); err != nil {
		return "", keys.PublicKey{}, err
	}
	if err := e.host(rec, true); err != nil {
		return "", keys.PublicKey{}, err
	}
	return rec.InstallationId, idk.Public, nil
}

// LoadInstallations starts every installation in the store that is not
// running yet. A record that cannot be read is reported and skipped.
func (e *Engine) LoadInstallations() ([]string, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	var recs []*messages.InstallationRecord
	err := e.deps.store.Scan(persistence.InstallationPrefix(), func(k, v []byte) error {
		var rec messages.InstallationRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			e.deps.log.Warn("installation record unreadable; skipped", "key", fmt.Sprintf("%x", k), "err", err)
			e.deps.stats.corrupt.Add(1)
			return nil
		}
		recs = append(recs, &rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var ids, started []string
	for _, rec := range recs {
		e.mu.Lock()
		_, running := e.installations[rec.InstallationId]
		e.mu.Unlock()
		if running {
			ids = append(ids, rec.InstallationId)
			continue
		}
		if err := e.host(rec, false); err != nil {
			e.deps.log.Warn("installation not started", "installation", rec.InstallationId, "err", err)
			e.deps.stats.corrupt.Add(1)
			continue
		}
		ids = append(ids, rec.InstallationId)
		started = append(started, rec.InstallationId)
	}
	// Every loaded installation is subscribed now: publish what their
	// outboxes hold (a send to another installation of this engine would
	// otherwise find no subscriber yet).
	e.mu.Lock()
	for _, id := range started {
		if h := e.installations[id]; h != nil {
			e.system.Root.Send(h.pid, &messages.RetryOutbox{})
		}
	}
	e.mu.Unlock()
	return ids, nil
}

// host spawns the Installation actor and subscribes it to its identity's
// topics; created: CreateInstallation made the record just now.
func (e *Engine) host(rec *messages.InstallationRecord, created bool) error {
	in, err := newInstallation(e.deps, rec)
	if err != nil {
		return err
	}
	in.created = created
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if _, ok := e.installations[rec.InstallationId]; ok {
		return fmt.Errorf("actors: installation %s is already running", rec.InstallationId)
	}
	pid, err := e.system.Root.SpawnNamed(e.deps.props(func() actor.Actor { return in }), "installation-"+rec.InstallationId)
	if err != nil {
		return err
	}
	h := &hosted{pid: pid, identity: in.identity.Public}
	// An installation receives on its identity's partitioned topic, and on
	// the negotiated one Status switches to after the first exchange (§12).
	for _, topic := range []string{transport.PartitionedTopic(in.identity.Public), transport.NegotiatedTopic(in.identity.Public)} {
		cancel, err := e.deps.tr.Subscribe(topic, e.gateway(pid))
		if err != nil {
			for _, c := range h.cancel {
				c()
			}
			e.system.Root.Stop(pid)
			return err
		}
		h.cancel = append(h.cancel, cancel)
	}
	e.installations[rec.InstallationId] = h
	return nil
}

// gateway is the transport handler of one installation (the architecture's
// TransportGateway): it hands the delivery to the Installation and waits
// until it has been processed, so a transport's per-subscription order is
// kept and a manual-mode test sees every effect before its call returns.
// It reports a delivery that was not taken — the installation could not
// commit it, or did not answer — so that a transport that acknowledges
// deliveries lets the sender try again. A definitive outcome (delivered,
// duplicate, malformed, undecryptable) is taken.
func (e *Engine) gateway(pid *actor.PID) transport.Handler {
	return func(d transport.Delivery) error {
		env := &messages.IncomingEnvelope{Topic: d.Topic, Payload: d.Payload, Sender: d.Sender[:], EnvelopeId: d.ID[:]}
		if !d.Recipient.IsZero() {
			env.Recipient = d.Recipient[:]
		}
		// Sent under the read lock, so that it is queued either before
		// Quiesce's poison pill (and answered) or not at all: behind the
		// pill it would wait for RequestTimeout, and the transport's
		// Close with it.
		e.mu.RLock()
		if e.closed {
			e.mu.RUnlock()
			return ErrClosed // not taken: the sender keeps it
		}
		slot := e.replies.get()
		e.system.Root.RequestWithCustomSender(pid, env, slot.pid)
		e.mu.RUnlock()
		if d.Taken != nil {
			// In the installation's mailbox (the send queues it before it
			// returns): the subscription's next delivery queues behind
			// it, so what arrives on one topic is received in order. (An
			// installation listens on two topics; a peer that moves from
			// one to the other can still be overtaken.)
			d.Taken()
		}
		res, err := e.replies.wait(slot)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrTimeout, err)
		}
		p, _ := res.(*messages.Processed)
		if p == nil {
			return ErrInternal
		}
		switch p.Error {
		case messages.ErrorCode_STORE, messages.ErrorCode_TIMEOUT, messages.ErrorCode_INTERNAL, messages.ErrorCode_CLOSED:
			return fmt.Errorf("%w: %s", ErrorOf(p.Error), p.Detail)
		}
		if p.RetryLater {
			return fmt.Errorf("%w: %s (not taken yet)", ErrorOf(p.Error), p.Detail)
		}
		if p.NotRecipient {
			return transport.ErrNotRecipient
		}
		return nil
	}
}

// SubscribePublic subscribes an installation to a public chat.
func (e *Engine) SubscribePublic(installationID, name string) error {
	h, err := e.get(installationID)
	if err != nil {
		return err
	}
	cancel, err := e.deps.tr.Subscribe(transport.PublicTopic(name), e.gateway(h.pid))
	if err != nil {
		return err
	}
	e.mu.Lock()
	h.cancel = append(h.cancel, cancel)
	e.mu.Unlock()
	return nil
}

func (e *Engine) get(id string) (*hosted, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	h := e.installations[id]
	if h == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownInstallation, id)
	}
	return h, nil
}

// Request sends an actor message to an installation and waits for the reply.
func (e *Engine) Request(installationID string, msg any) (any, error) {
	h, err := e.get(installationID)
	if err != nil {
		return nil, err
	}
	res, err := e.replies.request(h.pid, msg)
	if errors.Is(err, actor.ErrTimeout) {
		return nil, ErrTimeout
	}
	return res, err
}

// Ack tells an installation that the application has a message: its inbox
// record is deleted. It does not wait. The deletion goes straight to the
// Committer (it was the installation's only work for an AckMessage, one
// actor message more per delivered message): the record it deletes was
// committed before the message was delivered. It is queued under e.mu, which
// Close takes to mark the Committer stopped before it stops it, so an Ack
// that returned nil is queued ahead of the Committer's stop, and written.
// Acks are taken until then: after Quiesce too.
func (e *Engine) Ack(installationID string, id []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrClosed
	}
	if e.installations[installationID] == nil {
		return fmt.Errorf("%w: %s", ErrUnknownInstallation, installationID)
	}
	e.deps.ack(installationID, id)
	return nil
}

// Sessions lists an installation's sessions with one peer identity.
func (e *Engine) Sessions(installationID string, peer keys.PublicKey) (*messages.SessionsReply, error) {
	res, err := e.Request(installationID, &messages.SessionsQuery{PeerIdentity: peer[:]})
	if err != nil {
		return nil, err
	}
	r, _ := res.(*messages.SessionsReply)
	if r == nil {
		return nil, ErrInternal
	}
	return r, nil
}

// Identity returns the identity of a hosted installation.
func (e *Engine) Identity(installationID string) (keys.PublicKey, error) {
	h, err := e.get(installationID)
	if err != nil {
		return keys.PublicKey{}, err
	}
	return h.identity, nil
}

// Installations lists the hosted installation ids.
func (e *Engine) Installations() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	ids := make([]string, 0, len(e.installations))
	for id := range e.installations {
		ids = append(ids, id)
	}
	return ids
}

// StopInstallation stops a hosted installation and all its actors (its
// state stays in the store; LoadInstallations starts it again).
func (e *Engine) StopInstallation(id string) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	h := e.installations[id]
	delete(e.installations, id)
	e.mu.Unlock()
	if h == nil {
		return fmt.Errorf("%w: %s", ErrUnknownInstallation, id)
	}
	for _, c := range h.cancel {
		c()
	}
	// Not protoactor's StopFuture: its timer kept every stopped
	// installation in memory for 10 s (stopWatch).
	return stopAndWait(e.system, h.pid, e.deps.cfg.StopTimeout)
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	s := e.deps.stats
	st := Stats{
		Published: s.published.Load(), Decrypted: s.decrypted.Load(), Duplicates: s.duplicates.Load(),
		DecryptFailures: s.decryptFailures.Load(), Malformed: s.malformed.Load(), BadBundles: s.badBundles.Load(),
		NotForDevice: s.notForDevice.Load(), Adverts: s.adverts.Load(), Unwrapped: s.unwrapped.Load(),
		Unsupported: s.unsupported.Load(), X3DHActive: s.x3dhActive.Load(), X3DHPassive: s.x3dhPassive.Load(),
		Rotations: s.rotations.Load(), Corrupt: s.corrupt.Load(), BadEnvelopes: s.badEnvelopes.Load(),
		BundlesVerified: s.bundlesVerified.Load(), BundlesUnchanged: s.bundlesUnchanged.Load(),
		Commits: s.commits.Load(), CommittedWrites: s.committedWrites.Load(), CommitNanos: s.commitNanos.Load(),
		MaxBatch: s.maxBatch.Load(), SessionsActive: s.sessionsActive.Load(), Passivations: s.passivations.Load(),
		Redelivered: s.redelivered.Load(), OutboxResent: s.outboxResent.Load(), SupervisorPassivations: s.supervisorPassivations.Load(),
		ActorFailures: s.actorFailures.Load(), MailboxDepth: s.mailboxDepth(), ReservedSends: s.reservedSends.Load(),
	}
	for i := range s.commitBatch {
		st.CommitBatch[i] = s.commitBatch[i].Load()
	}
	for i := range s.commitLatency {
		st.CommitLatency[i] = s.commitLatency[i].Load()
	}
	return st
}

// Pending counts, from the store, the accepted sends not yet confirmed by
// the transport (outbox) and the received messages not yet acknowledged by
// the application (inbox), over every hosted installation. It reads what is
// committed: a record whose commit is still queued is not counted yet (with
// Badger, one being synced may be).
func (e *Engine) Pending() (outbox, inbox int, err error) {
	if err = e.deps.store.Scan(persistence.AllOutboxPrefix(), func(k, v []byte) error { outbox++; return nil }); err != nil {
		return 0, 0, err
	}
	// Kept messages first: one moved to the inbox meanwhile is counted
	// twice, never missed.
	if inbox, err = e.deps.keptInline(); err != nil {
		return 0, 0, err
	}
	if err = e.deps.store.Scan(persistence.AllInboxPrefix(), func(k, v []byte) error { inbox++; return nil }); err != nil {
		return 0, 0, err
	}
	return outbox, inbox, nil
}

// Quiesce stops the intake: it unsubscribes every installation and stops
// them, after what is queued to them, and refuses new requests; the
// Committer still runs, so the application can still acknowledge what it
// was given (Ack). Close finishes. Concurrent calls wait for the first.
func (e *Engine) Quiesce() {
	e.quiesceOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		all := make([]*hosted, 0, len(e.installations))
		for _, h := range e.installations {
			all = append(all, h)
		}
		e.mu.Unlock()
		for _, h := range all {
			for _, c := range h.cancel {
				c()
			}
		}
		// A poison pill, not a stop: it is a user message, so an
		// installation first works through what is queued before it (a
		// request answered, the writes it causes queued to the Committer).
		stopped := make([]actor.Future, 0, len(all))
		for _, h := range all {
			stopped = append(stopped, e.system.Root.PoisonFuture(h.pid))
		}
		for _, f := range stopped {
			_ = f.Wait()
		}
		// An installation created meanwhile is hosted by nobody (host
		// refuses a closed engine), but its record is committed first.
		e.creating.Wait()
	})
}

// Close quiesces the engine, stops the Committer after every write queued
// to it, and shuts the actor system down. It does not close the store or
// the transport, which the caller owns.
func (e *Engine) Close() error {
	e.Quiesce()
	e.closeOnce.Do(func() {
		e.unwatch()
		e.mu.Lock()
		e.stopped = true
		e.installations = nil
		e.mu.Unlock()
		// The Committer goes last, after everything that writes.
		_ = e.system.Root.PoisonFuture(e.deps.committer).Wait()
		e.system.Shutdown()
		e.deps.pool.stop()
		if c := e.deps.commitWaits.Load(); c != nil {
			c.Stop()
		}
		e.replies.waits.Stop()
	})
	return nil
}

// Now is the engine's clock.
func (e *Engine) Now() time.Time { return e.deps.cfg.Clock() }
