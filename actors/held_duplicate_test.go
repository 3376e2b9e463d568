package actors

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
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

// gatedStore is a Memory store whose Get waits until gate is closed: the
// PeerSession reads its record in its Started handler, so the test can fill
// its mailbox before it handles anything else.
type gatedStore struct {
	*persistence.Memory
	gate chan struct{}
}

func (s *gatedStore) Get(k []byte) ([]byte, error) {
	<-s.gate
	return s.Memory.Get(k)
}

// failFirstCommitter fails the first commit request (nothing written) and
// commits the later ones to the store.
type failFirstCommitter struct {
	store persistence.Store
	mu    sync.Mutex
	seen  int
}

func (c *failFirstCommitter) requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}

func (c *failFirstCommitter) Receive(ctx actor.Context) {
	var ws []persistence.Write
	answer := func(err error) {}
	switch m := ctx.Message().(type) {
	case *localCommit: // the engine's own writers (deps.commit)
		ws = m.writes
		answer = func(err error) {
			if m.done != nil {
				m.done <- err
			}
		}
	case *messages.CommitRequest:
		for _, w := range m.Writes {
			ws = append(ws, persistence.Write{Key: w.Key, Value: w.Value, Delete: w.Delete})
		}
		answer = func(err error) {
			if err != nil {
				ctx.Respond(&messages.CommitAck{Error: messages.ErrorCode_STORE, Detail: err.Error()})
				return
			}
			ctx.Respond(&messages.CommitAck{})
		}
	default:
		return
	}
	c.mu.Lock()
	c.seen++
	first := c.seen == 1
	c.mu.Unlock()
	if first {
		answer(errors.New("injected commit failure"))
		return
	}
	answer(c.store.Commit(ws))
}

type chachaReader struct{ r *rand.ChaCha8 }

func (c *chachaReader) Read(p []byte) (int, error) { return c.r.Read(p) }

// A transport retry of a message whose decrypt is still held for its batch's
// commit must not be answered DUPLICATE before that commit is durable: the
// engine treats DUPLICATE as "taken", so the sender drops the message from
// its outbox. Here the same ratchet message is delivered twice before the
// PeerSession closes its batch (both requests are in its mailbox ahead of
// the Flush the first one sends). The first copy advances the state and is
// held; the second finds its key consumed. The batch's commit then fails:
// the first copy gets STORE and the state goes back to the durable one. The
// second copy must then be decrypted anew (OK, with the plaintext), not be
// reported DUPLICATE: otherwise neither copy is delivered, and the message
// is lost. A third copy, after that commit succeeded, is a real duplicate.
// sessionFixture is an established session between a peer (A, the
// initiator, driven by the test with the crypto layer) and a local
// PeerSession (B, the responder), whose state is in a memory store: A sent
// a first message that B decrypted, B answered, and A decrypted it.
type sessionFixture struct {
	a                       *ratchet.Session
	peer                    keys.KeyPair
	bundleID                keys.PublicKey
	local, peerInstallation string
	storeKey                []byte
	mem                     *persistence.Memory
	spk                     keys.KeyPair // B's signed prekey (a fresh X3DH on the same bundle id)
	rnd                     *chachaReader
}

func newSessionFixture(t *testing.T, seed string) *sessionFixture {
	t.Helper()
	var s32 [32]byte
	copy(s32[:], seed)
	rnd := &chachaReader{rand.NewChaCha8(s32)}
	lim := ratchet.DefaultLimits()
	mustKey := func() keys.KeyPair {
		kp, err := keys.GenerateKey(rnd)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	f := &sessionFixture{peer: mustKey(), local: "local-installation", peerInstallation: "peer-installation", rnd: rnd}
	spk := mustKey()
	f.bundleID, f.spk = spk.Public, spk
	var sk [32]byte
	if _, err := rnd.Read(sk[:]); err != nil {
		t.Fatal(err)
	}
	ast, err := ratchet.NewInitiator(ratchet.RootKey(sk), spk.Public, rnd)
	if err != nil {
		t.Fatal(err)
	}
	f.a = &ratchet.Session{State: ast, Limits: lim}
	b := &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), spk), Limits: lim}
	h, ct, err := f.a.Encrypt([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Decrypt(h, ct, rnd); err != nil {
		t.Fatal(err)
	}
	if h, ct, err = b.Encrypt([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.a.Decrypt(h, ct, rnd); err != nil {
		t.Fatal(err)
	}
	f.storeKey = persistence.SessionKey(f.local, f.peer.Public[:], f.peerInstallation, f.bundleID[:])
	rec := &messages.SessionRecord{
		PeerIdentity:       f.peer.Public[:],
		PeerInstallationId: f.peerInstallation,
		BundleId:           f.bundleID[:],
		SymmetricKey:       sk[:],
		Confirmed:          true, // no SessionUpdate to the (absent) supervisor
		State:              b.State.Snapshot(),
	}
	raw, err := proto.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	f.mem = persistence.NewMemory()
	if err := f.mem.Commit([]persistence.Write{{Key: f.storeKey, Value: raw}}); err != nil {
		t.Fatal(err)
	}
	return f
}

// spawn starts B's PeerSession reading from store (the fixture's memory
// store, or a wrapper of it), with a failFirstCommitter that writes to the
// memory store. The actor system stops with the test.
// stored is the session record the fixture's store holds.
func (f *sessionFixture) stored(t *testing.T) *messages.SessionRecord {
	t.Helper()
	raw, err := f.mem.Get(f.storeKey)
	if err != nil {
		t.Fatal(err)
	}
	var rec messages.SessionRecord
	if err := proto.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	return &rec
}

func (f *sessionFixture) spawn(t *testing.T, store persistence.Store) (*actor.ActorSystem, *actor.PID, *failFirstCommitter) {
	// The session's own key source (it draws a ratchet key pair on a new
	// chain), apart from the test's.
	cfg := Config{Rand: &chachaReader{rand.NewChaCha8([32]byte{'s', 'e', 's', 's'})}}.withDefaults()
	d := &deps{cfg: cfg, store: store, log: cfg.Logger, stats: &stats{}}
	sys, session, fake, _ := f.spawnProduced(t, d)
	return sys, session, fake
}

// spawnProduced starts B's PeerSession on d (its store and config) with a
// failFirstCommitter, counting how often its producer ran.
func (f *sessionFixture) spawnProduced(t *testing.T, d *deps) (*actor.ActorSystem, *actor.PID, *failFirstCommitter, *atomic.Int64) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return d.cfg.Logger }))
	t.Cleanup(sys.Shutdown)
	fake := &failFirstCommitter{store: f.mem}
	d.root = sys.Root
	d.committer = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return fake }))
	var produced atomic.Int64
	session := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		produced.Add(1)
		return &peerSession{deps: d, local: f.local, peer: f.peer.Public, storeKey: f.storeKey}
	}))
	return sys, session, fake, &produced
}

func TestHeldDuplicateAfterFailedCommit(t *testing.T) {
	f := newSessionFixture(t, "held")
	a, mem, bundleID, local, peerInstallation := f.a, f.mem, f.bundleID, f.local, f.peerInstallation
	peerIdentity := f.peer

	// The message delivered twice: A's next one, on a new DH chain.
	const plaintext = "do not lose me"
	h, ct, err := a.Encrypt([]byte(plaintext))
	if err != nil {
		t.Fatal(err)
	}
	envelopeID := []byte("envelope-1")
	request := func() *messages.DecryptRequest {
		return &messages.DecryptRequest{
			PeerInstallationId: peerInstallation,
			Message:            &messages.EncryptedMessageProtocol{DrHeader: h.Proto(bundleID), Payload: bytes.Clone(ct)},
			Inbox: &messages.InboxRecord{
				Id: envelopeID, Sender: peerIdentity.Public[:], SenderInstallation: peerInstallation,
				Kind: int32(KindDirect), ReceivedUnixNano: 1,
			},
		}
	}

	store := &gatedStore{Memory: mem, gate: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(store.gate)
		}
	}
	defer release() // never leave the session blocked in Started
	sys, session, fake := f.spawn(t, store)
	// The session is blocked in Started (its load): both copies are queued
	// before it handles the first, hence before the Flush the first sends.
	const wait = 5 * time.Second
	first := sys.Root.RequestFuture(session, request(), wait)
	second := sys.Root.RequestFuture(session, request(), wait)
	release()

	reply := func(f actor.Future, which string) *messages.DecryptResponse {
		t.Helper()
		res, err := f.Result()
		if err != nil {
			t.Fatalf("%s copy: %v", which, err)
		}
		r, ok := res.(*messages.DecryptResponse)
		if !ok {
			t.Fatalf("%s copy: reply %T", which, res)
		}
		return r
	}
	r1 := reply(first, "first")
	if r1.Error != messages.ErrorCode_STORE {
		t.Fatalf("first copy: %v (%s), want STORE: its commit failed", r1.Error, r1.Detail)
	}
	r2 := reply(second, "second")
	if r2.Error != messages.ErrorCode_OK {
		t.Fatalf("second copy: %v (%s), want OK: the first copy's commit failed, so this one was not taken", r2.Error, r2.Detail)
	}
	if string(r2.Plaintext) != plaintext {
		t.Fatalf("second copy: plaintext %q, want %q", r2.Plaintext, plaintext)
	}
	if n := fake.requests(); n != 2 {
		t.Fatalf("%d commits requested, want 2 (the failed one, then the retry's)", n)
	}

	// The retry's commit is durable: the store holds the message, and the
	// stored state has consumed its key.
	ib, err := durableMessage(t, mem, local, envelopeID)
	if err != nil {
		t.Fatalf("stored message: %v", err)
	}
	if string(ib.Payload) != plaintext {
		t.Fatalf("inbox payload %q, want %q", ib.Payload, plaintext)
	}

	// Now a copy is a real duplicate.
	r3 := reply(sys.Root.RequestFuture(session, request(), wait), "third")
	if r3.Error != messages.ErrorCode_DUPLICATE {
		t.Fatalf("third copy: %v (%s), want DUPLICATE: the message was committed", r3.Error, r3.Detail)
	}
	if n := fake.requests(); n != 2 {
		t.Fatalf("%d commits requested after the duplicate, want 2", n)
	}
	if err := sys.Root.StopFuture(session).Wait(); err != nil {
		t.Fatal(err)
	}
}
