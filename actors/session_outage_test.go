package actors

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
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
	rnd := &chachaReader{rand.NewChaCha8([32]byte{'n', 'i', 'l'})}
	lim := ratchet.DefaultLimits()
	mk := func() keys.KeyPair { kp, _ := keys.GenerateKey(rnd); return kp }
	peerIdentity, spk := mk(), mk()
	var sk [32]byte
	rnd.Read(sk[:])
	ast, _ := ratchet.NewInitiator(ratchet.RootKey(sk), spk.Public, rnd)
	a := &ratchet.Session{State: ast, Limits: lim}
	b := &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), spk), Limits: lim}
	h, ct, _ := a.Encrypt([]byte("hello"))
	if _, _, err := b.Decrypt(h, ct, rnd); err != nil {
		t.Fatal(err)
	}
	const local, peerInst = "local", "peer"
	bid := spk.Public
	storeKey := persistence.SessionKey(local, peerIdentity.Public[:], peerInst, bid[:])
	rec := &messages.SessionRecord{PeerIdentity: peerIdentity.Public[:], PeerInstallationId: peerInst, BundleId: bid[:], SymmetricKey: sk[:], Confirmed: true, State: b.State.Snapshot()}
	raw, _ := proto.Marshal(rec)
	mem := persistence.NewMemory()
	mem.Commit([]persistence.Write{{Key: storeKey, Value: raw}})
	store := &flakyGetStore{Memory: mem}

	cfg := Config{Rand: &chachaReader{rand.NewChaCha8([32]byte{'s'})}}.withDefaults()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return cfg.Logger }))
	defer sys.Shutdown()
	fake := &failFirstCommitter{store: mem}
	d := &deps{cfg: cfg, store: store, log: cfg.Logger, stats: &stats{}, root: sys.Root}
	d.committer = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return fake }))
	session := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &peerSession{deps: d, local: local, peer: peerIdentity.Public, storeKey: storeKey}
	}))
	// Let it load.
	time.Sleep(100 * time.Millisecond)
	store.failGet.Store(true)
	res, err := sys.Root.RequestFuture(session, &messages.EncryptRequest{PeerInstallationId: peerInst, Payload: []byte("x")}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if code := res.(*messages.EncryptResponse).Error; code != messages.ErrorCode_STORE {
		t.Fatalf("encrypt during the outage: %v, want STORE", code)
	}
	store.failGet.Store(false) // the store is back
	h, ct, _ = a.Encrypt([]byte("after the outage"))
	res, err = sys.Root.RequestFuture(session, &messages.DecryptRequest{PeerInstallationId: peerInst,
		Message: &messages.EncryptedMessageProtocol{DrHeader: h.Proto(bid), Payload: ct},
		Inbox:   &messages.InboxRecord{Id: []byte("e2")}}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*messages.DecryptResponse)
	if r.Error != messages.ErrorCode_OK || string(r.Plaintext) != "after the outage" {
		t.Fatalf("a valid peer message after the store recovered: %v %s", r.Error, r.Detail)
	}
}
