// Package persistence is ratchetd's durable state: a small ordered key-value
// Store interface that the actors use, the key layout they share, and its
// implementations (in memory here; Badger for durable deployments).
//
// Values are protobuf records from messages/. Every Commit is atomic: either
// all of its writes are visible afterwards or none is, so a ratchet state and
// what it produced are never half-written.
package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"sync"

	"github.com/google/btree"
)

// ErrNotFound: no value under the key.
var ErrNotFound = errors.New("persistence: not found")

// ErrClosed: the store was closed.
var ErrClosed = errors.New("persistence: store closed")

// Write is one change of a Commit: a put, or a delete when Delete is set.
type Write struct {
	Key    []byte
	Value  []byte
	Delete bool
}

// Store is an ordered key-value store with atomic, durable commits.
type Store interface {
	// Get returns the value under key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Scan calls fn for every key with the prefix, in key order. The slices
	// are only valid during the call.
	Scan(prefix []byte, fn func(key, value []byte) error) error
	// Commit applies the writes atomically; when it returns nil they are
	// durable.
	Commit(writes []Write) error
	Close() error
}

// Key prefixes: one byte each, then the fields, each length-prefixed so that
// no key is a prefix of another's field (installation ids are free strings).
const (
	prefixInstallation byte = 'i'
	prefixDevice       byte = 'd'
	prefixSession      byte = 's'
	prefixSkipped      byte = 'k'
	prefixInbox        byte = 'n'
	prefixOutbox       byte = 'o'
	prefixInitiation   byte = 'e'
	prefixReplay       byte = 'r'
	prefixPeer         byte = 'p'
	prefixMeta         byte = 'm'
	prefixInlineMark   byte = 'u'
)

func appendField(k []byte, f []byte) []byte {
	k = binary.AppendUvarint(k, uint64(len(f)))
	return append(k, f...)
}

func key(prefix byte, fields ...[]byte) []byte {
	n := 1
	for _, f := range fields {
		n += len(f) + 2
	}
	k := make([]byte, 1, n)
	k[0] = prefix
	for _, f := range fields {
		k = appendField(k, f)
	}
	return k
}

// InstallationKey is the record of a hosted installation.
func InstallationKey(installationID string) []byte {
	return key(prefixInstallation, []byte(installationID))
}

// InstallationPrefix scans every hosted installation.
func InstallationPrefix() []byte { return []byte{prefixInstallation} }

// DeviceKey is a known device (peer or own paired installation) of one local
// installation.
func DeviceKey(local string, identity []byte, installationID string) []byte {
	return key(prefixDevice, []byte(local), identity, []byte(installationID))
}

// DeviceIdentityPrefix scans the devices of one identity known to a local
// installation.
func DeviceIdentityPrefix(local string, identity []byte) []byte {
	return key(prefixDevice, []byte(local), identity)
}

// DevicePrefix scans every device known to a local installation.
func DevicePrefix(local string) []byte { return key(prefixDevice, []byte(local)) }

// SessionKey is a ratchet session of a local installation.
func SessionKey(local string, peer []byte, peerInstallation string, bundleID []byte) []byte {
	return key(prefixSession, []byte(local), peer, []byte(peerInstallation), bundleID)
}

// SessionPrefix scans the sessions of a local installation with one peer
// identity.
func SessionPrefix(local string, peer []byte) []byte {
	return key(prefixSession, []byte(local), peer)
}

// PeerKey marks that a local installation has stored something (a device or
// a session) for a peer identity. It is written in the same commit as the
// first such record, so that a peer never seen is told apart by a point
// lookup, which Badger answers from a table's bloom filter, instead of a
// prefix scan, which reads a block of every level of the tree (and maps it
// into the process: see PeerMarksKey).
// Devices and sessions have a mark each (kind MarkDevices, MarkSessions):
// a peer's first message stores its device before its session exists.
func PeerKey(local string, identity []byte, kind byte) []byte {
	return key(prefixPeer, []byte(local), identity, []byte{kind})
}

// The kinds of PeerKey.
const (
	MarkDevices  byte = 'd'
	MarkSessions byte = 's'
)

// PeerMarksKey is present in a store whose every stored device and session
// has its PeerKey: a store created empty by an engine that writes them. A
// store from before then has no such key, and is scanned as before.
func PeerMarksKey() []byte { return key(prefixMeta, []byte("peer-marks")) }

// SkippedKey is one skipped message key of a session, ordered by sequence.
func SkippedKey(session []byte, seq uint64) []byte {
	k := make([]byte, 0, len(session)+9)
	k = append(k, prefixSkipped)
	k = append(k, session[1:]...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// SkippedPrefix scans the skipped keys of a session, oldest first.
func SkippedPrefix(session []byte) []byte {
	k := append([]byte{prefixSkipped}, session[1:]...)
	return k
}

// InboxKey is a received message not yet acknowledged by the application.
func InboxKey(local string, id []byte) []byte { return key(prefixInbox, []byte(local), id) }

// InboxPrefix scans a local installation's inbox.
func InboxPrefix(local string) []byte { return key(prefixInbox, []byte(local)) }

// OutboxKey is an accepted send not yet published.
func OutboxKey(local string, id []byte) []byte { return key(prefixOutbox, []byte(local), id) }

// OutboxPrefix scans a local installation's outbox.
func OutboxPrefix(local string) []byte { return key(prefixOutbox, []byte(local)) }

// OutboxIDOf returns the record id at the end of an outbox key read under
// OutboxPrefix(local) (prefix), without reading its value.
func OutboxIDOf(prefix, key []byte) ([]byte, bool) {
	if len(key) <= len(prefix) {
		return nil, false
	}
	n, w := binary.Uvarint(key[len(prefix):])
	if w <= 0 || uint64(len(key)-len(prefix)-w) != n {
		return nil, false
	}
	return key[len(prefix)+w:], true
}

// AllOutboxPrefix scans the outboxes of every hosted installation.
func AllOutboxPrefix() []byte { return []byte{prefixOutbox} }

// InlineMarkKey marks a session record (its store key, session) that holds
// received messages not yet acknowledged (SessionRecord.inbox): the
// installation finds them by these marks after a restart.
func InlineMarkKey(local string, session []byte) []byte {
	return key(prefixInlineMark, []byte(local), session)
}

// InlineMarkPrefix is the prefix of an installation's inline marks.
func InlineMarkPrefix(local string) []byte { return key(prefixInlineMark, []byte(local)) }

// AllInlineMarkPrefix is the prefix of every installation's inline marks.
func AllInlineMarkPrefix() []byte { return []byte{prefixInlineMark} }

// InlineMarkLocal is the installation id of an inline mark's key.
func InlineMarkLocal(k []byte) (string, bool) {
	if len(k) < 1 || k[0] != prefixInlineMark {
		return "", false
	}
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || n > uint64(len(k)-1-w) {
		return "", false
	}
	return string(k[1+w : 1+w+int(n)]), true
}

// AllInboxPrefix scans the inboxes of every hosted installation.
func AllInboxPrefix() []byte { return []byte{prefixInbox} }

// InitiationKey records an X3DH initiation (the peer's ephemeral key) that
// created a session, apart from the session record, so that a replay of it
// is refused even if the session record is lost or replaced (X3DH §4.2).
func InitiationKey(local string, peer []byte, peerInstallation string, ephemeral []byte) []byte {
	return key(prefixInitiation, []byte(local), peer, []byte(peerInstallation), ephemeral)
}

// ReplayKey records a DH-fallback entry or public envelope an installation
// has delivered, so that a replay after a restart is recognised.
func ReplayKey(local string, digest []byte) []byte { return key(prefixReplay, []byte(local), digest) }

// ReplayPrefix scans an installation's replay records.
func ReplayPrefix(local string) []byte { return key(prefixReplay, []byte(local)) }

// Batcher is implemented by stores that bound the size of one Commit.
type Batcher interface {
	// Fits reports whether n writes of size bytes in total fit in one
	// Commit.
	Fits(n int, size int64) bool
}

// Memory is an in-memory Store, for tests and for engines that need no
// durability. Keys are kept in order in a B-tree, so a Scan costs the size
// of what it returns and a write the logarithm of the store's size. (A
// sorted slice made every new key cost a copy of the store's keys: 15 % of
// the CPU of an in-memory x3dh benchmark, whose store grows by a dozen keys
// per message.)
type Memory struct {
	mu     sync.RWMutex
	data   map[string][]byte
	keys   *btree.BTreeG[string]
	closed bool
	// Commits counts successful commits (tests).
	Commits int
}

// memoryDegree is the B-tree's degree (google/btree's suggested value).
const memoryDegree = 32

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{data: make(map[string][]byte), keys: btree.NewOrderedG[string](memoryDegree)}
}

func (m *Memory) Get(k []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	v, ok := m.data[string(k)]
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (m *Memory) Scan(prefix []byte, fn func(k, v []byte) error) error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	p := string(prefix)
	var ks []string
	var vs [][]byte
	m.keys.AscendGreaterOrEqual(p, func(k string) bool {
		if !strings.HasPrefix(k, p) {
			return false
		}
		ks = append(ks, k)
		vs = append(vs, bytes.Clone(m.data[k]))
		return true
	})
	m.mu.RUnlock()
	for i, k := range ks {
		if err := fn([]byte(k), vs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (m *Memory) Commit(ws []Write) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, w := range ws {
		k := string(w.Key)
		_, exists := m.data[k]
		switch {
		case w.Delete && exists:
			delete(m.data, k)
			m.keys.Delete(k)
		case !w.Delete:
			if !exists {
				m.keys.ReplaceOrInsert(k)
			}
			m.data[k] = bytes.Clone(w.Value)
		}
	}
	m.Commits++
	return nil
}

func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Len is the number of records (tests).
func (m *Memory) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.data)
}
