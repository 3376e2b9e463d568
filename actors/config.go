// Package actors is ratchetd's engine: protoactor-go actors that run the
// 5/SECURE-TRANSPORT flows (design/architecture.md).
//
//	Engine (owns the actor system; routes transport deliveries)
//	 └── Installation[installation id]   one per hosted device: identity, device registry
//	      ├── BundlePublisher           signed bundle, rotation, contact-code publishing
//	      └── SessionSupervisor[peer]    routing by bundle id, concurrent-session tie-break, restarts
//	           └── PeerSession[peer installation, bundle id]   the only writer of one ratchet state
//
// Every piece of state has exactly one writer, the actor that owns it; there
// is no global lock. Actor messages are protobuf (messages/engine.proto).
package actors

import (
	"crypto/rand"
	"io"
	"log/slog"
	"time"

	"github.com/ratchetd/ratchetd/crypto/ratchet"
)

// Defaults (status-compat.md §6.7 unless said otherwise).
const (
	DefaultMaxInstallations = 3
	// DefaultDeviceCacheSize bounds the device lists cached per
	// installation.
	DefaultDeviceCacheSize = 4096
	// DefaultMaxDevicesPerIdentity: Status keeps every installation it
	// ever saw; ratchetd keeps the 16 most recently active per identity.
	DefaultMaxDevicesPerIdentity = 16
	DefaultBundleRefreshInterval = 24 * time.Hour
	// DefaultBundleResignInterval: Status re-signs its bundle with the
	// current time on every send (§4.2). The timestamp only orders device
	// activity, so ratchetd re-signs at most once per interval, saving a
	// signature (~25 µs) per message at high volume. Zero re-signs every time.
	DefaultBundleResignInterval = time.Second
	// DefaultBundleRecheckInterval: a received bundle that lists exactly
	// the entries of the sender's last verified one is verified again at
	// most once a minute (ratchetd's own; Status verifies every attached
	// bundle, and re-signs its own on every send, §4.2).
	DefaultBundleRecheckInterval = time.Minute
	// DefaultBundleAdvertInterval rate-limits the bundle we send back to a
	// peer whose message we could not use (partitioned device, failed
	// decrypt): Status's deviceNotFoundAckInterval, 7200 s (§10.3).
	DefaultBundleAdvertInterval = 2 * time.Hour
	// DefaultCommitDelay and DefaultCommitDelayMinBatch (ratchetd's own,
	// after PostgreSQL's commit_delay and commit_siblings): while the cores
	// are busy, a group commit after one of 8 requests or more waits up to
	// 1 ms for company. Durable pingpong, 128 conversations: 30 messages
	// per fsync instead of 13, less CPU per message, a lower p99.
	DefaultCommitDelay         = time.Millisecond
	DefaultCommitDelayMinBatch = 8
	// DefaultInlineInboxBytes: a session keeps up to 4 KiB of received,
	// unacknowledged plaintexts in its own record (ratchetd's own).
	DefaultInlineInboxBytes = 4 << 10
	// DefaultReplayCacheSize is how many recent DH-fallback entries and
	// public envelopes an installation remembers to drop replays.
	DefaultReplayCacheSize = 4096
	// DefaultSessionIdleTimeout: an idle session is passivated after a
	// minute, so memory follows the active set.
	DefaultSessionIdleTimeout = time.Minute
	// DefaultRequestTimeout bounds one actor request.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultStopTimeout bounds how long StopInstallation waits for the
	// installation and its children to stop (as protoactor-go's
	// StopFuture did).
	DefaultStopTimeout = 10 * time.Second
	// DefaultMaxAheadRefusals: a message too far ahead is offered again
	// for about 20 s (ten outbox passes) while the messages before it
	// arrive, then dropped.
	DefaultMaxAheadRefusals = 10
	// DefaultMaxOutboxInflight: four lanes' windows, so that a peer that
	// is down or hung holds at most a quarter of the installation's sends
	// in flight until its first failure (its lane then probes with one).
	DefaultMaxOutboxInflight = 1024
	// DefaultMaxOutboxAhead: a quarter of Status's MaxSkip, well under its
	// MaxMessageKeysPerSession (2000) and MaxKeep (3000).
	DefaultMaxOutboxAhead = 256
	// DefaultMaxOutboxBackoff: a peer that stays offline is probed once a
	// minute.
	DefaultMaxOutboxBackoff = time.Minute
	// DefaultSendReserve: a session that sends a run of messages commits
	// its sending chain at most once per 64 of them (ratchetd's own; Status
	// commits every message). A crash leaves at most 63 keys unused, which
	// the peer skips: far under MaxSkip (1000) with MaxOutboxAhead's 256.
	DefaultSendReserve = 64
)

// Config holds the engine's limits and injected dependencies. Zero fields
// take the defaults.
type Config struct {
	Ratchet               ratchet.Limits
	MaxInstallations      int
	BundleRefreshInterval time.Duration
	BundleResignInterval  time.Duration // negative: re-sign on every send
	BundleAdvertInterval  time.Duration
	// BundleRecheckInterval: how long after verifying and applying a
	// sender's bundle (newer than what we held), on our clock and on the
	// bundles' timestamps, one with the same entries under a new signature
	// is taken for it unverified (its newer timestamp is not recorded);
	// negative: every new signature is verified.
	BundleRecheckInterval time.Duration
	RequestTimeout        time.Duration
	// StopTimeout bounds StopInstallation's wait for the installation and
	// its children to stop.
	StopTimeout time.Duration
	// CommitTimeout bounds the wait for a commit (2 min): much longer than
	// a request, because a writer that gives up on a commit that lands
	// later would hold a state older than the store's.
	CommitTimeout time.Duration
	// MaxBatchWrites bounds one group commit (DefaultMaxBatchWrites).
	MaxBatchWrites int
	// CommitDelay bounds how long a group commit waits for company when
	// the last one held at least CommitDelayMinBatch requests (the store
	// is busy): a group commit costs one fsync whatever it holds. The wait
	// follows the process's CPU use (committer.go, commitPace): it grows
	// while the cores are busy with other work, and shrinks to nothing
	// when waiting would leave them idle (few writers, all waiting on the
	// commit). DefaultCommitDelay; negative: never.
	CommitDelay time.Duration
	// CommitDelayMinBatch: see CommitDelay (DefaultCommitDelayMinBatch).
	CommitDelayMinBatch int
	// SessionIdleTimeout passivates a PeerSession (and a SessionSupervisor
	// with no running session) idle that long: it is stopped, and the next
	// message reloads it from the store. Negative: never.
	SessionIdleTimeout time.Duration
	// OutboxRetryInterval is how long an installation waits before it
	// publishes unconfirmed outbox envelopes again (2 s).
	OutboxRetryInterval time.Duration
	// MaxOutboxBackoff bounds how long a peer whose sends keep failing
	// waits between two probes (DefaultMaxOutboxBackoff): the wait is
	// OutboxRetryInterval for the first five, then doubles with each
	// failed probe, so that peers that stay offline cost a publish a minute
	// each, not one every retry pass. A signed envelope from the peer ends
	// the wait, as does a transport.Watcher reporting a subscriber of the
	// topic its probe went to (the peer's node back).
	MaxOutboxBackoff time.Duration
	// MaxOutboxInflight bounds the outbox envelopes of one installation
	// published and not yet confirmed (DefaultMaxOutboxInflight); the rest
	// wait in creation order. It bounds the work in flight; what keeps a
	// peer's sends nearly in order (no gap near MaxSkip, no skipped key
	// evicted, a refused send retried before it is too late) is its lane's
	// window, MaxOutboxAhead, by default at most half of it.
	MaxOutboxInflight int
	// MaxOutboxAhead bounds, per recipient identity, how many of its sends
	// may be published past the oldest one not yet confirmed
	// (DefaultMaxOutboxAhead). A receiver can decrypt a message that later
	// ones overtook only while it keeps that message's key: it skips at
	// most MaxSkip keys at once, holds at most MaxMessageKeysPerSession,
	// and drops those older than its last MaxKeep messages (status-compat.md
	// §6.5). A send refused once (a node restarting, a timeout) and
	// offered again after thousands of later ones had been confirmed would
	// be undecryptable, confirmed as a duplicate, and lost. It is kept
	// below the three limits of Ratchet. Left at zero it is also at most
	// half of MaxOutboxInflight, so that one peer never holds every slot
	// in flight.
	MaxOutboxAhead int
	// MaxAheadRefusals is how many times a message too far ahead of its
	// chain (more than MaxSkip keys to skip) is refused as "not taken yet"
	// before it is dropped as undecryptable (DefaultMaxAheadRefusals).
	MaxAheadRefusals int
	// OutboxRetention drops an outbox envelope never confirmed for that long
	// (7 days: no subscriber ever appeared for its topic).
	OutboxRetention time.Duration
	// SendReserve is how many message keys of a sending chain a session
	// may commit ahead of use (DefaultSendReserve; negative: none, every
	// encrypt waits for a commit). Each commit of a session record stores
	// the chain stepped past the keys reserved, so an encrypt whose key is
	// below a durable reservation sends at once: the store can never derive
	// that key again (durability rule 1). A chain reserves as many keys as
	// the session has used on it since it loaded its state (at least one),
	// up to SendReserve: a chain that sends once (a conversation turn)
	// reserves one key, and a crash leaves unused at most as many keys as
	// it used. It is kept below the peer's skip window less MaxOutboxAhead
	// and below ratchet.MaxReserve.
	SendReserve int
	// ReplayCacheSize bounds the replay cache of DH-fallback and public
	// messages.
	ReplayCacheSize int
	// InlineInboxBytes bounds the plaintext bytes of received messages a
	// session keeps, until the application acknowledges them, in its own
	// record (SessionRecord.inbox), written with the state that decrypted
	// them, instead of an inbox record each
	// (DefaultInlineInboxBytes; negative: none). A message past the bound
	// gets an inbox record of its own. The record is written with every
	// new state, so the bound also bounds what each write carries again.
	InlineInboxBytes int
	// MaxDevicesPerIdentity bounds the installations remembered for one
	// identity (DefaultMaxDevicesPerIdentity); the least recently active
	// are forgotten first.
	MaxDevicesPerIdentity int
	// DeviceCacheSize is how many identities' device lists an installation
	// keeps in memory (DefaultDeviceCacheSize); the others are read from
	// the store when needed.
	DeviceCacheSize int
	// MaxBundleEntries bounds the installations a received bundle may list.
	MaxBundleEntries int
	// Clock is the engine's notion of now (injectable for tests).
	Clock func() time.Time
	// Rand is the source of every key and nonce (crypto/rand by default).
	Rand   io.Reader
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxInstallations <= 0 {
		c.MaxInstallations = DefaultMaxInstallations
	}
	if c.DeviceCacheSize <= 0 {
		c.DeviceCacheSize = DefaultDeviceCacheSize
	}
	if c.MaxDevicesPerIdentity <= 0 {
		c.MaxDevicesPerIdentity = DefaultMaxDevicesPerIdentity
	}
	if c.BundleRefreshInterval <= 0 {
		c.BundleRefreshInterval = DefaultBundleRefreshInterval
	}
	if c.BundleResignInterval == 0 {
		c.BundleResignInterval = DefaultBundleResignInterval
	} else if c.BundleResignInterval < 0 {
		c.BundleResignInterval = 0
	}
	if c.BundleRecheckInterval == 0 {
		c.BundleRecheckInterval = DefaultBundleRecheckInterval
	} else if c.BundleRecheckInterval < 0 {
		c.BundleRecheckInterval = 0
	}
	if c.InlineInboxBytes == 0 {
		c.InlineInboxBytes = DefaultInlineInboxBytes
	} else if c.InlineInboxBytes < 0 {
		c.InlineInboxBytes = 0
	}
	if c.BundleAdvertInterval <= 0 {
		c.BundleAdvertInterval = DefaultBundleAdvertInterval
	}
	if c.MaxBatchWrites <= 0 {
		c.MaxBatchWrites = DefaultMaxBatchWrites
	}
	if c.CommitDelay == 0 {
		c.CommitDelay = DefaultCommitDelay
	} else if c.CommitDelay < 0 {
		c.CommitDelay = 0
	}
	if c.CommitDelayMinBatch <= 0 {
		c.CommitDelayMinBatch = DefaultCommitDelayMinBatch
	}
	if c.SessionIdleTimeout == 0 {
		c.SessionIdleTimeout = DefaultSessionIdleTimeout
	}
	if c.OutboxRetryInterval <= 0 {
		c.OutboxRetryInterval = 2 * time.Second
	}
	if c.MaxOutboxBackoff <= 0 {
		c.MaxOutboxBackoff = DefaultMaxOutboxBackoff
	}
	c.MaxOutboxBackoff = max(c.MaxOutboxBackoff, c.OutboxRetryInterval)
	if c.MaxAheadRefusals <= 0 {
		c.MaxAheadRefusals = DefaultMaxAheadRefusals
	}
	if c.MaxOutboxInflight <= 0 {
		c.MaxOutboxInflight = DefaultMaxOutboxInflight
	}
	lim := c.Ratchet.WithDefaults()
	ahead := min(int(lim.MaxSkip), lim.MaxMessageKeysPerSession, int(min(lim.MaxKeep, 1<<30)))
	if c.MaxOutboxAhead <= 0 {
		c.MaxOutboxAhead = min(DefaultMaxOutboxAhead, c.MaxOutboxInflight/2)
	}
	c.MaxOutboxAhead = max(1, min(c.MaxOutboxAhead, ahead-1))
	switch {
	case c.SendReserve == 0:
		c.SendReserve = DefaultSendReserve
	case c.SendReserve < 0:
		c.SendReserve = 0
	}
	// The peer skips at most MaxSkip keys at once: the keys a crash leaves
	// unused plus the sends published ahead must stay under it.
	c.SendReserve = max(0, min(c.SendReserve, ratchet.MaxReserve, ahead-1-c.MaxOutboxAhead))
	if c.OutboxRetention <= 0 {
		c.OutboxRetention = 7 * 24 * time.Hour
	}
	if c.ReplayCacheSize <= 0 {
		c.ReplayCacheSize = DefaultReplayCacheSize
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = 2 * time.Minute
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
