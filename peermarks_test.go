package ratchetd_test

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// TestPeerMarks: a store created empty keeps a mark per (installation,
// peer identity) with the first device or session record, so a first
// contact is a point lookup; a store from before the marks (no
// PeerMarksKey) is still scanned, and its sessions are found after a
// restart.
func TestPeerMarks(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "one")
	w.deliver()
	mustSend(t, bob, alice, "two")
	w.deliver()
	aliceID, bobID := alice.Identity(), bob.Identity()
	marks := [][]byte{
		persistence.PeerMarksKey(),
		persistence.PeerKey(alice.InstallationID(), bobID[:], persistence.MarkDevices),
		persistence.PeerKey(alice.InstallationID(), bobID[:], persistence.MarkSessions),
		persistence.PeerKey(bob.InstallationID(), aliceID[:], persistence.MarkDevices),
		persistence.PeerKey(bob.InstallationID(), aliceID[:], persistence.MarkSessions),
	}
	for _, k := range marks {
		if _, err := w.store.Get(k); err != nil {
			t.Fatalf("mark %x: %v", k, err)
		}
	}

	// The same store as one written before the marks.
	var drop []persistence.Write
	for _, k := range marks {
		drop = append(drop, persistence.Write{Key: k, Delete: true})
	}
	if err := w.store.Commit(drop); err != nil {
		t.Fatal(err)
	}
	w.restart(nil)
	alice, bob = w.reload(alice), w.reload(bob)
	mustSend(t, alice, bob, "three")
	mustSend(t, bob, alice, "four")
	w.deliver()
	if st := w.eng.Stats(); st.X3DHActive+st.X3DHPassive != 0 {
		t.Fatalf("X3DH ran after restart on an unmarked store: %+v", st)
	}
	if got := w.received(bob); !slices.Equal(got, []string{"one", "three"}) {
		t.Fatalf("bob got %q", got)
	}
	if got := w.received(alice); !slices.Equal(got, []string{"two", "four"}) {
		t.Fatalf("alice got %q", got)
	}
	if _, err := w.store.Get(persistence.PeerMarksKey()); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("a store with unmarked records was taken as marked: %v", err)
	}
}

// scanLog records the prefixes scanned.
type scanLog struct {
	*persistence.Memory
	mu    sync.Mutex
	scans [][]byte
}

func (s *scanLog) Scan(prefix []byte, fn func(k, v []byte) error) error {
	s.mu.Lock()
	s.scans = append(s.scans, bytes.Clone(prefix))
	s.mu.Unlock()
	return s.Memory.Scan(prefix, fn)
}

func (s *scanLog) scanned(prefix []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.scans, func(p []byte) bool { return bytes.Equal(p, prefix) })
}

// TestFirstContactScansNothing: on a marked store, a first message from a
// new identity (X3DH with its bundle attached) reads the receiver's devices
// and sessions of that identity by point lookups only, no prefix scan; a
// known peer after a restart is scanned.
func TestFirstContactScansNothing(t *testing.T) {
	var log *scanLog
	w := newWorld(t, transport.Faults{}, nil)
	w.restart(func(o *ratchetd.Options) {
		log = &scanLog{Memory: w.store}
		o.Store = log
	})
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "hello")
	w.deliver()
	if got := w.received(bob); !slices.Equal(got, []string{"hello"}) {
		t.Fatalf("bob got %q", got)
	}
	aliceID := alice.Identity()
	devices := persistence.DeviceIdentityPrefix(bob.InstallationID(), aliceID[:])
	sessions := persistence.SessionPrefix(bob.InstallationID(), aliceID[:])
	if log.scanned(devices) || log.scanned(sessions) {
		t.Fatalf("bob scanned for a peer it never saw (devices %v, sessions %v)", log.scanned(devices), log.scanned(sessions))
	}

	// Known now: after a restart the same lookups find the marks and scan.
	w.restart(func(o *ratchetd.Options) { o.Store = log })
	alice, bob = w.reload(alice), w.reload(bob)
	mustSend(t, alice, bob, "again")
	w.deliver()
	if !log.scanned(sessions) {
		t.Fatal("bob did not read its sessions with a known peer after a restart")
	}
	if got := w.received(bob); !slices.Equal(got, []string{"hello", "again"}) {
		t.Fatalf("bob got %q", got)
	}
}
