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
	converse(t, w, alice, bob)
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
	resumed(t, w, alice, bob, "a restart on an unmarked store")
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

// markFailStore fails every commit that fail matches, until disarmed
// (the Committer retries a failed group commit request by request).
type markFailStore struct {
	*persistence.Memory
	mu   sync.Mutex
	fail func([]persistence.Write) bool
}

func (s *markFailStore) arm(f func([]persistence.Write) bool) {
	s.mu.Lock()
	s.fail = f
	s.mu.Unlock()
}

func (s *markFailStore) Commit(ws []persistence.Write) error {
	s.mu.Lock()
	f := s.fail
	if f != nil && f(ws) {
		s.mu.Unlock()
		return errors.New("injected commit failure")
	}
	s.mu.Unlock()
	return s.Memory.Commit(ws)
}

// TestDeviceWriteCarriesMark: every commit of a device record carries the
// identity's mark. (Found by review: the mark went only with the first
// device in the registry's cache; when that commit, not waited for,
// failed, a later device write (the user disabling the device) committed
// without it, and after a restart the registry took the identity for a new
// peer: the device was invisible, and the next bundle re-created it
// enabled.) Here every commit with the mark fails during an outage, the
// disable is retried after it, and after a restart the device is known
// and still disabled.
func TestDeviceWriteCarriesMark(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	fs := &markFailStore{Memory: w.store}
	w.restart(func(o *ratchetd.Options) { o.Store = fs })
	alice, bob := w.account(), w.account()
	aliceID := alice.Identity()
	mark := persistence.PeerKey(bob.InstallationID(), aliceID[:], persistence.MarkDevices)
	fs.arm(func(ws []persistence.Write) bool {
		for _, w := range ws {
			if bytes.Equal(w.Key, mark) {
				return true
			}
		}
		return false
	})
	introduce(t, bob, alice) // bob stores alice's device: that commit fails
	if err := bob.DisableDevice(aliceID, alice.InstallationID()); err == nil {
		t.Fatal("a device write without its mark was committed")
	}
	fs.arm(nil) // the outage ends; the user disables the device again
	if err := bob.DisableDevice(aliceID, alice.InstallationID()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.Get(persistence.DeviceKey(bob.InstallationID(), aliceID[:], alice.InstallationID())); err != nil {
		t.Fatalf("device record not stored: %v", err)
	}
	_, markErr := w.store.Get(mark)

	w.restart(nil)
	alice, bob = w.reload(alice), w.reload(bob)
	ds, err := bob.Devices(aliceID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Enabled {
		t.Errorf("after a restart bob knows %d devices of alice (%+v), want 1, disabled; the mark in the store: %v", len(ds), ds, markErr)
	}
	// alice's bundle again (Status attaches it to every message).
	introduce(t, bob, alice)
	ds, err = bob.Devices(aliceID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Enabled {
		t.Errorf("after alice's next bundle: %+v, want her device still disabled", ds)
	}
}
