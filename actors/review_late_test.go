package actors

import (
	"bytes"
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

// heldCommitter holds the commits while hold is set (so each one answers
// late), applies the held ones in order on heldRelease, and counts the
// commits that arrived while an earlier one was held. spawnLate's holds
// until its gate is closed: then it applies what it held and holds no more.
type heldCommitter struct {
	store        *persistence.Memory
	hold         atomic.Bool
	gate         chan struct{} // optional
	mu           sync.Mutex
	queue        []*localCommit
	whilePending int
	received     int
}

// heldRelease applies the held commits; last: and holds no more.
type heldRelease struct{ last bool }

func (c *heldCommitter) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *localCommit:
		c.mu.Lock()
		c.received++
		if len(c.queue) > 0 {
			c.whilePending++
		}
		c.mu.Unlock()
		if c.hold.Load() || len(c.queue) > 0 {
			if len(c.queue) == 0 && c.gate != nil {
				self, sys := ctx.Self(), ctx.ActorSystem()
				go func() { <-c.gate; sys.Root.Send(self, heldRelease{last: true}) }()
			}
			c.queue = append(c.queue, m)
			return
		}
		err := c.store.Commit(m.writes)
		if m.done != nil {
			m.done <- err
		}
	case heldRelease:
		if m.last {
			c.hold.Store(false)
		}
		for _, q := range c.queue {
			err := c.store.Commit(q.writes)
			if q.done != nil {
				q.done <- err
			}
		}
		c.queue = nil
		if ctx.Sender() != nil {
			ctx.Respond(true)
		}
	}
}

// counts returns the commits received, and those received while an
// earlier one was held.
func (c *heldCommitter) counts() (received, overtakers int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received, c.whilePending
}

func (c *heldCommitter) overtakers() int {
	_, n := c.counts()
	return n
}

// rvParent spawns the session as its child (the session sends its
// SessionUpdates to its parent) and ignores what it is told.
type rvParent struct {
	props *actor.Props
	child chan *actor.PID
}

func (p *rvParent) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); ok {
		p.child <- ctx.Spawn(p.props)
	}
}

type rvFixture struct {
	*sessionFixture
	spk keys.KeyPair
	rnd *chachaReader
}

// newRVFixture: newSessionFixture's established session, keeping B's SPK
// (for a fresh X3DH on the same bundle id).
func newRVFixture(t *testing.T, seed string) *rvFixture {
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
	f := &sessionFixture{peer: mustKey(), local: "local-installation", peerInstallation: "peer-installation"}
	spk := mustKey()
	f.bundleID = spk.Public
	var sk [32]byte
	rnd.Read(sk[:])
	ast, err := ratchet.NewInitiator(ratchet.RootKey(sk), spk.Public, rnd)
	if err != nil {
		t.Fatal(err)
	}
	f.a = &ratchet.Session{State: ast, Limits: lim}
	b := &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), spk), Limits: lim}
	h, ct, _ := f.a.Encrypt([]byte("hello"))
	if _, _, err := b.Decrypt(h, ct, rnd); err != nil {
		t.Fatal(err)
	}
	h, ct, _ = b.Encrypt([]byte("hi"))
	if _, _, err := f.a.Decrypt(h, ct, rnd); err != nil {
		t.Fatal(err)
	}
	f.storeKey = persistence.SessionKey(f.local, f.peer.Public[:], f.peerInstallation, f.bundleID[:])
	rec := &messages.SessionRecord{
		PeerIdentity: f.peer.Public[:], PeerInstallationId: f.peerInstallation, BundleId: f.bundleID[:],
		SymmetricKey: sk[:], Confirmed: true, State: b.State.Snapshot(),
	}
	raw, _ := proto.Marshal(rec)
	f.mem = persistence.NewMemory()
	if err := f.mem.Commit([]persistence.Write{{Key: f.storeKey, Value: raw}}); err != nil {
		t.Fatal(err)
	}
	return &rvFixture{sessionFixture: f, spk: spk, rnd: rnd}
}

// spawnLate spawns the session under a parent, on a committer that holds
// every commit until its gate is closed.
func (f *rvFixture) spawnLate(t *testing.T, store persistence.Store) (*actor.ActorSystem, *actor.PID, *heldCommitter, *deps) {
	cfg := Config{CommitTimeout: 200 * time.Millisecond, Rand: &chachaReader{rand.NewChaCha8([32]byte{'s'})}}.withDefaults()
	d := &deps{cfg: cfg, store: store, log: cfg.Logger, stats: &stats{}}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return d.cfg.Logger }))
	t.Cleanup(sys.Shutdown)
	c := &heldCommitter{store: f.mem, gate: make(chan struct{})}
	c.hold.Store(true)
	d.root = sys.Root
	d.committer = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return c }))
	p := &rvParent{child: make(chan *actor.PID, 1), props: actor.PropsFromProducer(func() actor.Actor {
		return &peerSession{deps: d, local: f.local, peer: f.peer.Public, storeKey: f.storeKey}
	})}
	sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return p }))
	return sys, <-p.child, c, d
}

func (f *rvFixture) req(h ratchet.Header, ct []byte, id string) *messages.DecryptRequest {
	return &messages.DecryptRequest{
		PeerInstallationId: f.peerInstallation,
		Message:            &messages.EncryptedMessageProtocol{DrHeader: h.Proto(f.bundleID), Payload: bytes.Clone(ct)},
		Inbox: &messages.InboxRecord{Id: []byte(id), Sender: f.peer.Public[:], SenderInstallation: f.peerInstallation,
			Kind: int32(KindDirect), ReceivedUnixNano: 1},
	}
}

func rvReply(t *testing.T, fu actor.Future, which string) *messages.DecryptResponse {
	t.Helper()
	res, err := fu.Result()
	if err != nil {
		t.Fatalf("%s: %v", which, err)
	}
	r, ok := res.(*messages.DecryptResponse)
	if !ok {
		t.Fatalf("%s: reply %T", which, res)
	}
	return r
}

// A transport retry of a held message, whose batch's commit then answers
// late: the retry is answered NO_SESSION (the session was emptied by the
// reload that found the late commit pending), which the engine treats as
// taken and answers with a bundle advert (account recovery), instead of
// STORE (not taken, offered again).
func TestReviewLateHeldDuplicateIsNotNoSession(t *testing.T) {
	f := newRVFixture(t, "late-dup")
	h, ct, err := f.a.Encrypt([]byte("retry me"))
	if err != nil {
		t.Fatal(err)
	}
	store := &gatedStore{Memory: f.mem, gate: make(chan struct{})}
	sys, session, c, _ := f.spawnLate(t, store)
	defer close(c.gate)
	first := sys.Root.RequestFuture(session, f.req(h, ct, "e1"), 5*time.Second)
	second := sys.Root.RequestFuture(session, f.req(h, ct, "e1"), 5*time.Second)
	close(store.gate)
	if r := rvReply(t, first, "first copy"); r.Error != messages.ErrorCode_STORE {
		t.Fatalf("first copy: %v %s, want STORE (late commit)", r.Error, r.Detail)
	}
	if r := rvReply(t, second, "second copy"); r.Error != messages.ErrorCode_STORE {
		t.Errorf("second copy: %v (%s), want STORE: the first copy's commit has not answered, nothing was taken", r.Error, r.Detail)
	}
}

// A fresh X3DH decrypt queued behind a held decrypt whose batch commit
// answers late: decryptFresh commits while the late commit is pending.
// The late commit (the old chain's skipped keys) lands first; the fresh
// commit deleted only the skipped keys its scan saw (none yet), so the old
// keys stay under the fresh session's prefix, and the fresh session, once
// read back, is corrupt: the session starts empty.
func TestReviewLateFreshDoesNotWrite(t *testing.T) {
	f := newRVFixture(t, "late-fresh")
	// m2 of a new chain first: m0, m1 become skipped keys (in the late commit).
	var hs []ratchet.Header
	var cts [][]byte
	for _, p := range []string{"m0", "m1", "m2"} {
		h, ct, err := f.a.Encrypt([]byte(p))
		if err != nil {
			t.Fatal(err)
		}
		hs, cts = append(hs, h), append(cts, ct)
	}
	// A fresh X3DH on the same bundle id (the peer lost its state).
	var sk2 [32]byte
	f.rnd.Read(sk2[:])
	a2st, err := ratchet.NewInitiator(ratchet.RootKey(sk2), f.spk.Public, f.rnd)
	if err != nil {
		t.Fatal(err)
	}
	a2 := &ratchet.Session{State: a2st, Limits: ratchet.DefaultLimits()}
	fh, fct, _ := a2.Encrypt([]byte("fresh"))
	ek, _ := keys.GenerateKey(f.rnd)
	fresh := f.req(fh, fct, "f1")
	fresh.FreshSymmetricKey = sk2[:]
	fresh.FreshPeerEphemeral = ek.Public[:]
	fresh.SignedPreKey = &messages.OwnPreKey{PrivateKey: f.spk.Private[:], PublicKey: f.spk.Public[:]}

	store := &gatedStore{Memory: f.mem, gate: make(chan struct{})}
	sys, session, c, d := f.spawnLate(t, store)
	released := false
	defer func() {
		if !released {
			close(c.gate)
		}
	}()
	first := sys.Root.RequestFuture(session, f.req(hs[2], cts[2], "e2"), 5*time.Second)
	second := sys.Root.RequestFuture(session, fresh, 5*time.Second)
	close(store.gate)
	if r := rvReply(t, first, "m2"); r.Error != messages.ErrorCode_STORE {
		t.Fatalf("m2: %v %s, want STORE (late commit)", r.Error, r.Detail)
	}
	time.Sleep(50 * time.Millisecond) // the fresh decrypt's commit is sent
	released = true
	close(c.gate) // the late commit lands, then what came after it
	r2 := rvReply(t, second, "fresh")
	if n := c.overtakers(); n != 0 {
		t.Errorf("%d commit(s) sent while the late one was pending (fresh answered %v %s)", n, r2.Error, r2.Detail)
	}
	// What the store holds now, read back.
	time.Sleep(50 * time.Millisecond)
	if r2.Error == messages.ErrorCode_STORE {
		// Not taken while the late commit was pending: the sender offers
		// it again, before anything after it.
		retry := f.req(fh, fct, "f1")
		retry.FreshSymmetricKey, retry.FreshPeerEphemeral, retry.SignedPreKey = fresh.FreshSymmetricKey, fresh.FreshPeerEphemeral, fresh.SignedPreKey
		if r := rvReply(t, sys.Root.RequestFuture(session, retry, 5*time.Second), "fresh again"); r.Error != messages.ErrorCode_OK {
			t.Fatalf("fresh offered again once the late commit answered: %v %s", r.Error, r.Detail)
		}
	}
	a2h, a2ct, _ := a2.Encrypt([]byte("fresh 2"))
	r3 := rvReply(t, sys.Root.RequestFuture(session, f.req(a2h, a2ct, "f2"), 5*time.Second), "fresh 2")
	if n := d.stats.corrupt.Load(); n != 0 {
		t.Errorf("stored session read back corrupt (%d); fresh 2: %v %s", n, r3.Error, r3.Detail)
	}
	if r3.Error != messages.ErrorCode_OK {
		t.Errorf("fresh 2: %v %s, want OK (fresh answered %v)", r3.Error, r3.Detail, r2.Error)
	}
}

// A fresh X3DH decrypt whose own commit answers late leaves the old
// record and state in memory; a ResetSending then (markStale, no unloaded
// check) commits the old state, Stale, behind the late commit: the new
// session (whose initiation key the late commit recorded, so a replay is
// refused) is overwritten by the old one.
func TestReviewLateMarkStaleDoesNotWrite(t *testing.T) {
	f := newRVFixture(t, "late-stale")
	var sk2 [32]byte
	f.rnd.Read(sk2[:])
	a2st, err := ratchet.NewInitiator(ratchet.RootKey(sk2), f.spk.Public, f.rnd)
	if err != nil {
		t.Fatal(err)
	}
	a2 := &ratchet.Session{State: a2st, Limits: ratchet.DefaultLimits()}
	fh, fct, _ := a2.Encrypt([]byte("fresh"))
	ek, _ := keys.GenerateKey(f.rnd)
	fresh := f.req(fh, fct, "f1")
	fresh.FreshSymmetricKey = sk2[:]
	fresh.FreshPeerEphemeral = ek.Public[:]
	fresh.SignedPreKey = &messages.OwnPreKey{PrivateKey: f.spk.Private[:], PublicKey: f.spk.Public[:]}

	sys, session, c, _ := f.spawnLate(t, f.mem)
	if r := rvReply(t, sys.Root.RequestFuture(session, fresh, 5*time.Second), "fresh"); r.Error != messages.ErrorCode_STORE {
		t.Fatalf("fresh: %v %s, want STORE (late commit)", r.Error, r.Detail)
	}
	sys.Root.Send(session, &messages.ResetSending{})
	time.Sleep(50 * time.Millisecond)
	close(c.gate)
	time.Sleep(50 * time.Millisecond)
	if n := c.overtakers(); n != 0 {
		t.Errorf("%d commit(s) sent while the late one was pending", n)
	}
	rec := f.stored(t)
	if !bytes.Equal(rec.PeerEphemeralKey, ek.Public[:]) {
		t.Errorf("stored record is not the fresh session the late commit wrote (stale=%v): overwritten by the older state", rec.Stale)
	}
}
