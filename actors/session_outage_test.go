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
