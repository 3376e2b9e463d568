package actors

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// flakyGetStore fails every Get while failGet is set (a store outage).
type flakyGetStore struct {
	*persistence.Memory
	failGet atomic.Bool
}

func (s *flakyGetStore) Get(k []byte) ([]byte, error) {
	if s.failGet.Load() {
		return nil, errors.New("injected read failure")
	}
	return s.Memory.Get(k)
}

// TestSessionKeepsDurableStateThroughOutage: a batch commit fails while
// the store cannot be read either (an outage), so the session cannot go
// back to its durable state at once. It must not forget it: once the store
// is back, a valid message from the peer decrypts. (Found by review: the
// session answered NO_SESSION from then on, which the gateway takes as
// final; the message was dropped and the peer told to start over.)
func TestSessionKeepsDurableStateThroughOutage(t *testing.T) {
	f := newSessionFixture(t, "outage")
	store := &flakyGetStore{Memory: f.mem}
	sys, session, _ := f.spawn(t, store)
	// Let it load.
	time.Sleep(100 * time.Millisecond)
	store.failGet.Store(true)
	res, err := sys.Root.RequestFuture(session, &messages.EncryptRequest{PeerInstallationId: f.peerInstallation, Payload: []byte("x")}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if code := res.(*messages.EncryptResponse).Error; code != messages.ErrorCode_STORE {
		t.Fatalf("encrypt during the outage: %v, want STORE", code)
	}
	store.failGet.Store(false) // the store is back
	h, ct, err := f.a.Encrypt([]byte("after the outage"))
	if err != nil {
		t.Fatal(err)
	}
	res, err = sys.Root.RequestFuture(session, &messages.DecryptRequest{PeerInstallationId: f.peerInstallation,
		Message: &messages.EncryptedMessageProtocol{DrHeader: h.Proto(f.bundleID), Payload: ct},
		Inbox:   &messages.InboxRecord{Id: []byte("e2")}}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*messages.DecryptResponse)
	if r.Error != messages.ErrorCode_OK || string(r.Plaintext) != "after the outage" {
		t.Fatalf("a valid peer message after the store recovered: %v %s", r.Error, r.Detail)
	}
}

// panicOnceStore panics on the first Get (a bug in the session's load path,
// as far as the session can tell).
type panicOnceStore struct {
	*persistence.Memory
	armed atomic.Bool
}

func (s *panicOnceStore) Get(k []byte) ([]byte, error) {
	if s.armed.CompareAndSwap(true, false) {
		panic("injected panic in Get")
	}
	return s.Memory.Get(k)
}

// TestSessionRecoversInPlace: a PeerSession that panics starts again from
// its durable state in the same actor (engine children share one Props and
// are never re-produced, see deps.spawnChild), and then works: a valid
// message from the peer decrypts.
func TestSessionRecoversInPlace(t *testing.T) {
	f := newSessionFixture(t, "in place")
	store := &panicOnceStore{Memory: f.mem}
	store.armed.Store(true)
	cfg := Config{}.withDefaults()
	d := &deps{cfg: cfg, store: store, log: cfg.Logger, stats: &stats{}}
	sys, session, _, produced := f.spawnProduced(t, d)
	h, ct, err := f.a.Encrypt([]byte("after the panic"))
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's committer fails its first commit: the first copy is
	// not taken (STORE), the retried copy is.
	for i, want := range []messages.ErrorCode{messages.ErrorCode_STORE, messages.ErrorCode_OK} {
		res, err := sys.Root.RequestFuture(session, &messages.DecryptRequest{PeerInstallationId: f.peerInstallation,
			Message: &messages.EncryptedMessageProtocol{DrHeader: h.Proto(f.bundleID), Payload: ct},
			Inbox:   &messages.InboxRecord{Id: []byte("e1")}}, 5*time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		r := res.(*messages.DecryptResponse)
		if r.Error != want || (want == messages.ErrorCode_OK && string(r.Plaintext) != "after the panic") {
			t.Fatalf("copy %d after the session's panic: %v %s, want %v", i+1, r.Error, r.Detail, want)
		}
	}
	if store.armed.Load() {
		t.Fatal("the injected panic did not happen")
	}
	if n := produced.Load(); n != 1 {
		t.Fatalf("the session was produced %d times, want 1 (recovered in place)", n)
	}
	if n := d.stats.sessionsActive.Load(); n != 1 {
		t.Fatalf("sessions active %d, want 1", n)
	}
}
