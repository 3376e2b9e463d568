package ratchet

import (
	"fmt"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
)

// KeyID names a message key: the sender's ratchet key and the message number.
type KeyID struct {
	RatchetKey keys.PublicKey
	N          uint32
}

// SkippedKey is a message key derived ahead of an out-of-order message, with
// the sequence number that orders retention (status-compat.md §6.5).
type SkippedKey struct {
	KeyID
	Key MessageKey
	Seq uint64
}

// SkippedKeys is one session's store of skipped message keys: an O(1) index
// and a FIFO in sequence order, so the oldest keys are evicted first. Reads
// never modify it; only Apply does.
type SkippedKeys struct {
	index map[KeyID]SkippedKey
	order []orderEntry // sequence order, oldest first; may hold used keys
	head  int
}

type orderEntry struct {
	id  KeyID
	seq uint64
}

// Len is the number of keys held.
func (s *SkippedKeys) Len() int { return len(s.index) }

// Lookup returns a stored message key.
func (s *SkippedKeys) Lookup(id KeyID) (SkippedKey, bool) {
	k, ok := s.index[id]
	return k, ok
}

// All returns the held keys, oldest first (for snapshots).
func (s *SkippedKeys) All() []SkippedKey {
	out := make([]SkippedKey, 0, len(s.index))
	for _, e := range s.order[s.head:] {
		if k, ok := s.index[e.id]; ok && k.Seq == e.seq {
			out = append(out, k)
		}
	}
	return out
}

// add inserts keys; callers add them in increasing Seq.
func (s *SkippedKeys) add(k SkippedKey) {
	if s.index == nil {
		s.index = make(map[KeyID]SkippedKey)
	}
	s.index[k.KeyID] = k
	s.order = append(s.order, orderEntry{id: k.KeyID, seq: k.Seq})
}

// evict drops keys beyond the limits, oldest first: keep at most
// MaxMessageKeysPerSession keys, and none with seq <= keysCount − MaxKeep
// (status-go's TruncateMks then DeleteOldMks, status-compat.md §6.5).
func (s *SkippedKeys) evict(keysCount uint64, lim Limits) []SkippedKey {
	var evicted []SkippedKey
	for s.head < len(s.order) {
		e := s.order[s.head]
		k, live := s.index[e.id]
		live = live && k.Seq == e.seq
		tooOld := keysCount >= lim.MaxKeep && e.seq <= keysCount-lim.MaxKeep
		if live && !tooOld && len(s.index) <= lim.MaxMessageKeysPerSession {
			break
		}
		if live {
			delete(s.index, e.id)
			evicted = append(evicted, k)
		}
		s.order[s.head] = orderEntry{}
		s.head++
	}
	// Compact once the dead prefix dominates, so the FIFO stays bounded.
	if s.head > 64 && s.head*2 > len(s.order) {
		n := copy(s.order, s.order[s.head:])
		clear(s.order[n:])
		s.order = s.order[:n]
		s.head = 0
	}
	return evicted
}

// Snapshot returns the persistent form of every held key, oldest first.
func (s *SkippedKeys) Snapshot() []*messages.SkippedKey {
	all := s.All()
	out := make([]*messages.SkippedKey, len(all))
	for i, k := range all {
		out[i] = &messages.SkippedKey{RatchetKey: clone(k.RatchetKey[:]), N: k.N, MessageKey: clone(k.Key[:]), Seq: k.Seq}
	}
	return out
}

// SkippedKeysFromSnapshot parses persisted keys and applies the limits to
// them, so that a store written with larger limits (or tampered with) is
// bounded on load as well as on write.
func SkippedKeysFromSnapshot(p []*messages.SkippedKey, keysCount uint64, lim Limits) (SkippedKeys, error) {
	lim = lim.withDefaults()
	var s SkippedKeys
	var last uint64
	for i, k := range p {
		rk, err := keys.ParsePublicKey(k.GetRatchetKey())
		if err != nil {
			return SkippedKeys{}, fmt.Errorf("%w: skipped key %d: %w", ErrInvalidState, i, err)
		}
		if len(k.GetMessageKey()) != 32 {
			return SkippedKeys{}, fmt.Errorf("%w: skipped key %d: message key is %d bytes", ErrInvalidState, i, len(k.GetMessageKey()))
		}
		if (i > 0 && k.GetSeq() <= last) || k.GetSeq() >= keysCount {
			return SkippedKeys{}, fmt.Errorf("%w: skipped key %d: sequence %d out of order", ErrInvalidState, i, k.GetSeq())
		}
		last = k.GetSeq()
		sk := SkippedKey{KeyID: KeyID{RatchetKey: rk, N: k.GetN()}, Seq: k.GetSeq()}
		copy(sk.Key[:], k.GetMessageKey())
		s.add(sk)
	}
	s.evict(keysCount, lim)
	return s, nil
}

// Wipe overwrites every held key (best effort, see State.Wipe).
func (s *SkippedKeys) Wipe() {
	for id, k := range s.index {
		clear(k.Key[:])
		s.index[id] = k
	}
}
