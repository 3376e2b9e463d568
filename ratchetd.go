// Package ratchetd is the embedding API of the ratchetd engine: open an
// engine, create or load accounts (installations), send Status-compatible
// end-to-end encrypted messages, and receive decrypted ones.
//
// An Engine hosts any number of installations — a bot backend runs thousands
// of accounts in one process — each with its own identity key, installation
// id, device registry and ratchet sessions, all run by protoactor-go actors
// (package actors). Nothing a peer sends can crash the engine: a malformed
// message is counted (Stats) and dropped with a logged reason.
package ratchetd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/actors"
	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// Errors returned by the API; match with errors.Is.
var (
	ErrClosed              = actors.ErrClosed
	ErrUnknownInstallation = actors.ErrUnknownInstallation
	ErrTimeout             = actors.ErrTimeout
	ErrNoSession           = ratchet.ErrNoSession
	ErrInvalidKey          = keys.ErrInvalidKey
	ErrBadBundle           = bundle.ErrMalformedBundle
	ErrBadSignature        = keys.ErrBadSignature
	ErrUnknownDevice       = errors.New("ratchetd: unknown device")
	ErrNotDelivered        = errors.New("ratchetd: no installation of the peer could be encrypted for")
	ErrLocked              = persistence.ErrLocked
)

// Limits are the protocol limits, each with Status's default when zero.
type Limits struct {
	Ratchet          ratchet.Limits // MaxSkip 1000, MaxKeep 3000, MaxMessageKeysPerSession 2000
	MaxInstallations int            // 3
	MaxBundleEntries int            // 16
	// MaxDevicesPerIdentity bounds the installations remembered per peer
	// identity (16; the least recently active are forgotten).
	MaxDevicesPerIdentity int
}

// Options configure an engine. The zero value is an in-memory engine with
// an in-memory transport.
type Options struct {
	// Dir, when set, keeps the state in a Badger database in that directory
	// (SyncWrites on, values encrypted at rest); otherwise, and unless Store
	// is set, the state is in memory.
	Dir string
	// EncryptionKey is the 32-byte store key for Dir; nil keeps it in
	// Dir/store.key (see README: what the data directory reveals).
	EncryptionKey []byte
	// NoSync turns Badger's SyncWrites off (safe against a process crash,
	// not against power loss).
	NoSync bool
	// Store holds the state when Dir is empty; nil means a new in-memory
	// store.
	Store persistence.Store
	// Transport carries envelopes; nil means a new in-memory transport.
	Transport transport.Transport
	Limits    Limits
	// BundleRefreshInterval rotates the signed prekey (24 h).
	BundleRefreshInterval time.Duration
	// BundleResignInterval is how long the bundle attached to our messages
	// keeps its signature (1 s; negative: re-signed on every send, as
	// Status does, status-compat.md §4.2).
	BundleResignInterval time.Duration
	// BundleAdvertInterval rate-limits bundle replies to a peer (2 h).
	BundleAdvertInterval time.Duration
	// BundleRecheckInterval: a peer's bundle that lists exactly the
	// entries of its last verified one is verified again at most this
	// often (1 min; negative: every new signature). Status re-signs its
	// bundle on every send, so otherwise each message from a Status client
	// costs one more signature recovery.
	BundleRecheckInterval time.Duration
	// InlineInboxBytes: received plaintexts not yet acknowledged are kept
	// in their session's record, up to this many bytes per session (4 KiB;
	// negative: an inbox record each, one more write and one more delete
	// per message).
	InlineInboxBytes int
	// CommitDelay: while the store is busy (the last group commit held 8
	// requests or more) and the cores have other work, a group commit
	// waits up to this long after its first request for others to join
	// it: fewer fsyncs under load. The wait shrinks to nothing when it
	// would leave the cores idle (1 ms; negative: never).
	CommitDelay time.Duration
	// Clock is the engine's time source (time.Now).
	Clock func() time.Time
	// Rand is the source of all keys and nonces (crypto/rand); it must be
	// safe for concurrent use.
	Rand   io.Reader
	Logger *slog.Logger
	// Handler, when set, receives every message on one goroutine, in order;
	// otherwise they are read from Engine.Messages. Messages redelivered
	// after a restart may reach it while Open is returning: a handler that
	// uses the *Engine must obtain it through a synchronisation point (a
	// channel, an atomic), not a plain variable assigned from Open.
	Handler func(Message)
	// ManualAck leaves acknowledgement to the application (Engine.Ack):
	// every received message is committed to a durable inbox with the state
	// that decrypted it, and delivered again after a restart until it is
	// acknowledged (at-least-once; Message.ID identifies repeats). Without
	// it a message is acknowledged once the Handler returned or the channel
	// receive happened.
	ManualAck bool
	// SessionIdleTimeout passivates idle sessions (1 min; negative: never).
	SessionIdleTimeout time.Duration
	// RequestTimeout bounds one call into the engine (10 s).
	RequestTimeout time.Duration
	// OutboxRetryInterval is how long an installation waits before it
	// offers unconfirmed or refused sends again (2 s).
	OutboxRetryInterval time.Duration
	// MaxOutboxBackoff bounds the wait between two offers to a peer whose
	// sends keep failing (1 min): it is OutboxRetryInterval for the first
	// five, then doubles with each failure; a message from the peer ends it.
	MaxOutboxBackoff time.Duration
	// MaxOutboxInflight bounds the sends of one installation published and
	// not yet confirmed by a confirming transport (1024); the others wait,
	// oldest first.
	MaxOutboxInflight int
	// MaxOutboxAhead bounds, per peer identity, the sends published past
	// the oldest one a confirming transport has not confirmed (256, or half
	// of MaxOutboxInflight if less; kept below the ratchet limits): a peer
	// keeps the key of an overtaken message only so long, so a refused
	// send must not be overtaken without bound while it waits for its
	// retry. After a failure a peer's sends are retried one at a time
	// until one is confirmed.
	MaxOutboxAhead int
	// SendReserve is how many message keys of a sending chain may be
	// committed ahead of use (64; negative: none). A run of sends then
	// commits once per 64 messages instead of once per message; a crash
	// leaves at most that many keys unused, which the peer skips.
	SendReserve int
	// GroupSendConcurrency bounds the pairwise sends of one SendGroup in
	// flight at once (DefaultGroupSendConcurrency; 1 sends them one after
	// another, as Status does).
	GroupSendConcurrency int
}

// DefaultGroupSendConcurrency: concurrent pairwise sends share group
// commits, so a message to many members waits for a few commits, not one
// per member.
const DefaultGroupSendConcurrency = 16

// Message is a received message; see actors.Message.
type Message = actors.Message

// Message kinds.
const (
	KindDirect    = actors.KindDirect
	KindPublic    = actors.KindPublic
	KindUnwrapped = actors.KindUnwrapped
)

// Stats are the engine's counters.
type Stats = actors.Stats

// Bucket bounds of Stats.CommitBatch (writes) and Stats.CommitLatency
// (seconds).
var (
	CommitBatchBuckets   = actors.CommitBatchBuckets
	CommitLatencyBuckets = actors.CommitLatencyBuckets
)

// Engine is an open ratchetd engine.
type Engine struct {
	eng       *actors.Engine
	store     persistence.Store
	tr        transport.Transport
	ownStore  bool
	ownTr     bool
	box       *mailbox
	closeOnce sync.Once
	// groupSends is Options.GroupSendConcurrency.
	groupSends int
}

// Open starts an engine and every installation found in its store.
func Open(o Options) (*Engine, error) {
	e := &Engine{store: o.Store, tr: o.Transport, groupSends: o.GroupSendConcurrency}
	if e.groupSends <= 0 {
		e.groupSends = DefaultGroupSendConcurrency
	}
	if o.Dir != "" {
		db, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: o.Dir, EncryptionKey: o.EncryptionKey, NoSync: o.NoSync, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		e.store, e.ownStore = db, true
	}
	if e.store == nil {
		e.store, e.ownStore = persistence.NewMemory(), true
	}
	if e.tr == nil {
		e.tr, e.ownTr = transport.NewMemory(transport.MemoryOptions{}), true
	}
	e.box = newMailbox(o.Handler)
	if !o.ManualAck {
		e.box.ack = func(m Message) { e.Ack(m) }
	}
	cfg := actors.Config{
		Ratchet:               o.Limits.Ratchet,
		MaxInstallations:      o.Limits.MaxInstallations,
		MaxBundleEntries:      o.Limits.MaxBundleEntries,
		MaxDevicesPerIdentity: o.Limits.MaxDevicesPerIdentity,
		BundleRefreshInterval: o.BundleRefreshInterval,
		BundleResignInterval:  o.BundleResignInterval,
		BundleAdvertInterval:  o.BundleAdvertInterval,
		BundleRecheckInterval: o.BundleRecheckInterval,
		InlineInboxBytes:      o.InlineInboxBytes,
		CommitDelay:           o.CommitDelay,
		RequestTimeout:        o.RequestTimeout,
		SessionIdleTimeout:    o.SessionIdleTimeout,
		OutboxRetryInterval:   o.OutboxRetryInterval,
		MaxOutboxBackoff:      o.MaxOutboxBackoff,
		MaxOutboxInflight:     o.MaxOutboxInflight,
		MaxOutboxAhead:        o.MaxOutboxAhead,
		SendReserve:           o.SendReserve,
		Clock:                 o.Clock,
		Rand:                  o.Rand,
		Logger:                o.Logger,
	}
	e.eng = actors.NewEngine(cfg, e.store, e.tr, e.box.push)
	if _, err := e.eng.LoadInstallations(); err != nil {
		e.box.start()
		e.Close()
		return nil, err
	}
	e.box.start()
	return e, nil
}

// Messages is the stream of received messages (when no Handler was set).
// It is closed by Close.
func (e *Engine) Messages() <-chan Message { return e.box.out }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats { return e.eng.Stats() }

// Pending counts the durable outbox records (sends accepted, not yet
// confirmed by the transport) and inbox records (received, not yet
// acknowledged by the application) of every hosted account.
func (e *Engine) Pending() (outbox, inbox int, err error) { return e.eng.Pending() }

// Ack acknowledges a received message (with Options.ManualAck): it will not
// be delivered again.
func (e *Engine) Ack(m Message) error { return e.eng.Ack(m.RecipientInstallation, m.ID) }

// Transport returns the engine's transport.
func (e *Engine) Transport() transport.Transport { return e.tr }

// CreateAccount creates a new identity with its first installation.
func (e *Engine) CreateAccount() (*Account, error) {
	id, pub, err := e.eng.CreateInstallation(nil)
	if err != nil {
		return nil, err
	}
	return &Account{e: e, id: id, identity: pub}, nil
}

// AddInstallation creates a new installation (device) of an existing
// identity: a second device, or an account recovered on an empty store.
func (e *Engine) AddInstallation(identity keys.PrivateKey) (*Account, error) {
	id, pub, err := e.eng.CreateInstallation(&identity)
	if err != nil {
		return nil, err
	}
	return &Account{e: e, id: id, identity: pub}, nil
}

// Account returns a hosted installation by id.
func (e *Engine) Account(installationID string) (*Account, error) {
	pub, err := e.eng.Identity(installationID)
	if err != nil {
		return nil, err
	}
	return &Account{e: e, id: installationID, identity: pub}, nil
}

// Accounts lists the hosted installations.
func (e *Engine) Accounts() []*Account {
	var out []*Account
	for _, id := range e.eng.Installations() {
		if a, err := e.Account(id); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Actors exposes the actor engine (diagnostics and tests).
func (e *Engine) Actors() *actors.Engine { return e.eng }

// Close stops the intake and the installations, lets the Handler finish the
// messages already given to it (without ManualAck, each is acknowledged as
// it returns, so it is not delivered again after a restart), stops the
// engine, then closes the store and transport the engine created itself.
// Messages not yet read from Engine.Messages are dropped: they stay in the
// durable inbox and come again after a restart.
func (e *Engine) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.eng.Quiesce()
		e.box.close()
		err = e.eng.Close()
		if e.ownTr {
			e.tr.Close()
		}
		if e.ownStore {
			if cerr := e.store.Close(); err == nil {
				err = cerr
			}
		}
	})
	return err
}

// Account is one hosted installation.
type Account struct {
	e        *Engine
	id       string
	identity keys.PublicKey
}

// InstallationID is this device's id (a UUID v4).
func (a *Account) InstallationID() string { return a.id }

// Identity is the account's public identity key (its chat key).
func (a *Account) Identity() keys.PublicKey { return a.identity }

// SendReport tells what a send did.
type SendReport struct {
	Installations []string // recipient installations encrypted for
	Failed        []string // installations that could not be encrypted for
	DHFallback    bool     // no bundle of the peer was known (no forward secrecy)
	// Envelopes is how many envelopes the send made and accepted: each is
	// published, or durable in the outbox and published later.
	Envelopes int
	// Queued is how many of them wait in the outbox: the transport refused
	// them for now (or an earlier refused send is still ahead of them), or
	// the peer's window or MaxOutboxInflight is full. They are published,
	// oldest first, as the transport takes them.
	Queued int
}

func (a *Account) request(msg any) (any, error) { return a.e.eng.Request(a.id, msg) }

// Send encrypts payload for the peer's active installations (and a copy for
// this identity's paired installations) and publishes it. It returns once
// every new ratchet state is durable and each envelope is handed to the
// transport or, when the transport refused it for now or cannot take it
// yet, kept in the durable outbox to be published later (SendReport.Queued).
func (a *Account) Send(peer keys.PublicKey, payload []byte) (SendReport, error) {
	return a.send(&messages.SendCommand{PeerIdentity: peer[:], Payload: payload})
}

func (a *Account) send(cmd *messages.SendCommand) (SendReport, error) {
	res, err := a.request(cmd)
	if err != nil {
		return SendReport{}, err
	}
	r, ok := res.(*messages.SendReport)
	if !ok {
		return SendReport{}, actors.ErrInternal
	}
	rep := SendReport{Installations: r.Installations, Failed: r.Failed, DHFallback: r.DhFallback, Envelopes: int(r.Envelopes), Queued: int(r.Queued)}
	if r.Error != messages.ErrorCode_OK {
		if r.Error == messages.ErrorCode_NO_SESSION {
			return rep, ErrNotDelivered
		}
		return rep, fmt.Errorf("%w: %s", actors.ErrorOf(r.Error), r.Detail)
	}
	return rep, nil
}

// SendGroup sends one payload to every member of a private group chat: a
// pairwise-encrypted fan-out (5/SECURE-TRANSPORT "Group chat"). The reports
// follow the members' order (our own identity, and repeats, left out). The
// pairwise sends run concurrently, at most Options.GroupSendConcurrency at
// once: each waits until its states are durable, and sends in flight
// together share group commits, so a message to N members waits for about
// one commit instead of N in a row.
func (a *Account) SendGroup(members []keys.PublicKey, payload []byte) ([]SendReport, error) {
	targets := make([]keys.PublicKey, 0, len(members))
	seen := make(map[keys.PublicKey]bool, len(members))
	for _, m := range members {
		if m != a.identity && !seen[m] {
			seen[m] = true
			targets = append(targets, m)
		}
	}
	reps := make([]SendReport, len(targets))
	errs := make([]error, len(targets))
	slots := make(chan struct{}, a.e.groupSends)
	var wg sync.WaitGroup
	for i, m := range targets {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			r, err := a.Send(m, payload)
			reps[i] = r
			if err != nil {
				errs[i] = fmt.Errorf("member %s: %w", m, err)
			}
		}()
	}
	wg.Wait()
	return reps, errors.Join(errs...)
}

// SendPublic posts a cleartext message on a public chat; the bundle is
// attached as on every message.
func (a *Account) SendPublic(chat string, payload []byte) error {
	_, err := a.send(&messages.SendCommand{PublicTopic: chat, Payload: payload})
	return err
}

// JoinPublic subscribes this installation to a public chat.
func (a *Account) JoinPublic(chat string) error { return a.e.eng.SubscribePublic(a.id, chat) }

// AnnounceDevice sends this installation's bundle to the account's other
// installations, which can then approve (pair) it.
func (a *Account) AnnounceDevice() error {
	_, err := a.send(&messages.SendCommand{PeerIdentity: a.identity[:], Advertise: true})
	return err
}

// Device is a known installation of a peer or of this account.
type Device struct {
	Identity       keys.PublicKey
	InstallationID string
	Enabled        bool
	Version        uint32
	LastActive     time.Time
}

// Devices lists the known installations of identity (every identity if zero).
func (a *Account) Devices(identity keys.PublicKey) ([]Device, error) {
	q := &messages.DevicesQuery{}
	if !identity.IsZero() {
		q.Identity = identity[:]
	}
	res, err := a.request(q)
	if err != nil {
		return nil, err
	}
	l, ok := res.(*messages.DeviceList)
	if !ok {
		return nil, actors.ErrInternal
	}
	out := make([]Device, 0, len(l.Devices))
	for _, d := range l.Devices {
		out = append(out, Device{Identity: keys.PublicKey(d.Identity), InstallationID: d.InstallationId, Enabled: d.Enabled, Version: d.Version, LastActive: time.Unix(0, d.Timestamp)})
	}
	return out, nil
}

// ApproveDevice enables a device; for one of this account's own
// installations it is the pairing approval (status-compat.md §9).
func (a *Account) ApproveDevice(identity keys.PublicKey, installationID string) error {
	return a.setEnabled(identity, installationID, true)
}

// DisableDevice stops sending to a device; one of our own is removed from
// our bundle.
func (a *Account) DisableDevice(identity keys.PublicKey, installationID string) error {
	return a.setEnabled(identity, installationID, false)
}

func (a *Account) setEnabled(identity keys.PublicKey, installationID string, on bool) error {
	res, err := a.request(&messages.SetDeviceEnabled{Identity: identity[:], InstallationId: installationID, Enabled: on})
	if err != nil {
		return err
	}
	ack, _ := res.(*messages.Ack)
	if ack == nil {
		return actors.ErrInternal
	}
	if ack.Error == messages.ErrorCode_NO_SESSION {
		return fmt.Errorf("%w: %s", ErrUnknownDevice, installationID)
	}
	if ack.Error != messages.ErrorCode_OK {
		return fmt.Errorf("%w: %s", actors.ErrorOf(ack.Error), ack.Detail)
	}
	return nil
}

// RotatePreKey rotates the signed prekey now (it also rotates every
// BundleRefreshInterval on its own).
func (a *Account) RotatePreKey() error {
	_, err := a.request(&messages.RotateRequest{})
	return err
}

// ExportBundle returns this installation's current signed bundle as a string
// (base64url of its protobuf), for a QR code or any out-of-band channel.
func (a *Account) ExportBundle() (string, error) {
	res, err := a.request(&messages.BundleRequest{NowUnixNano: a.e.eng.Now().UnixNano()})
	if err != nil {
		return "", err
	}
	r, _ := res.(*messages.BundleReply)
	if r == nil || r.Bundle == nil {
		return "", actors.ErrInternal
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Bundle)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ImportBundle verifies and stores a bundle exported by ExportBundle, so the
// next Send to its identity runs X3DH instead of the DH fallback.
func (a *Account) ImportBundle(s string) error {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadBundle, err)
	}
	var b messages.Bundle
	if err := proto.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("%w: %v", ErrBadBundle, err)
	}
	res, err := a.request(&messages.ImportBundle{Bundle: &b})
	if err != nil {
		return err
	}
	ack, _ := res.(*messages.Ack)
	if ack == nil {
		return actors.ErrInternal
	}
	if ack.Error != messages.ErrorCode_OK {
		return fmt.Errorf("%w: %s", ErrBadBundle, ack.Detail)
	}
	return nil
}

// mailbox hands messages from the actors (which must not block) to the
// application: an unbounded queue drained by one goroutine into a handler or
// a channel.
type mailbox struct {
	ack     func(Message) // nil with ManualAck
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []Message
	closed  bool
	out     chan Message
	handler func(Message)
	done    chan struct{}
}

func newMailbox(h func(Message)) *mailbox {
	b := &mailbox{out: make(chan Message, 256), handler: h, done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// start begins delivery. Open calls it last, so a Handler never runs before
// Open has returned the engine it may use (redelivered messages arrive while
// the installations start).
func (b *mailbox) start() { go b.run() }

func (b *mailbox) push(m Message) {
	b.mu.Lock()
	if !b.closed {
		b.queue = append(b.queue, m)
		b.cond.Signal()
	}
	b.mu.Unlock()
}

func (b *mailbox) run() {
	defer close(b.done)
	defer close(b.out)
	for {
		b.mu.Lock()
		for len(b.queue) == 0 && !b.closed {
			b.cond.Wait()
		}
		if len(b.queue) == 0 {
			b.mu.Unlock()
			return
		}
		m := b.queue[0]
		b.queue[0] = Message{}
		b.queue = b.queue[1:]
		b.mu.Unlock()
		if b.handler != nil {
			b.handler(m)
		} else {
			b.out <- m
		}
		if b.ack != nil {
			b.ack(m)
		}
	}
}

// close delivers what is queued, then ends the stream. With no handler and
// no reader, queued messages are dropped after a short grace period.
func (b *mailbox) close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	if b.handler != nil {
		<-b.done
		return
	}
	go func() {
		for range b.out {
		}
	}()
	<-b.done
}
