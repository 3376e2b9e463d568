package ratchetd_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// ---- helpers of the review tests ----

// seededRand is a deterministic, concurrency-safe source for Options.Rand.
type seededRand struct {
	mu sync.Mutex
	r  *rand.ChaCha8
}

func newSeededRand(seed byte) *seededRand {
	var s [32]byte
	for i := range s {
		s[i] = seed + byte(i)
	}
	return &seededRand{r: rand.NewChaCha8(s)}
}

func (s *seededRand) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Read(p)
}

// seeded is a world tweak that makes every key and nonce reproducible.
func seeded(seed byte, more ...func(*ratchetd.Options)) func(*ratchetd.Options) {
	return func(o *ratchetd.Options) {
		o.Rand = newSeededRand(seed)
		for _, f := range more {
			f(o)
		}
	}
}

// envelopesTo returns the envelopes published on a topic since mark.
func (t *tap) envelopesTo(mark int, topic string) []*messages.Envelope {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*messages.Envelope
	for _, e := range t.sent[mark:] {
		if e.Topic == topic {
			out = append(out, proto.Clone(e).(*messages.Envelope))
		}
	}
	return out
}

// corruptSessions overwrites every session record of local with peer, as
// TestFlowAccountRecovery does (the state of that side is lost).
func corruptSessions(t *testing.T, w *world, local, peer *ratchetd.Account) {
	t.Helper()
	n := 0
	prefix := persistence.SessionPrefix(local.InstallationID(), peer.Identity().Bytes())
	var ks [][]byte
	w.store.Scan(prefix, func(k, _ []byte) error {
		ks = append(ks, bytes.Clone(k))
		return nil
	})
	for _, k := range ks {
		if err := w.store.Commit([]persistence.Write{{Key: k, Value: []byte{0xff, 0x01, 0x02}}}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no session record found")
	}
}

func count(ms []string, s string) int {
	n := 0
	for _, m := range ms {
		if m == s {
			n++
		}
	}
	return n
}

// gatedStore holds every session commit while the gate is closed.
type gatedStore struct {
	persistence.Store
	mu   sync.Mutex
	gate chan struct{}
}

func (g *gatedStore) Commit(ws []persistence.Write) error {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		for _, w := range ws {
			if len(w.Key) > 0 && w.Key[0] == 's' {
				<-gate
				break
			}
		}
	}
	return g.Store.Commit(ws)
}

func (g *gatedStore) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

// ---- bugs ----

// Two Sends to a peer with no session yet, issued concurrently: the
// SessionSupervisor learns of the session it initiated only through the
// PeerSession's SessionUpdate, so a second EncryptRequest that reaches it
// before that update runs a second X3DH (new EK) and replaces the first
// session under the same key. Both ciphertexts leave, each with a different
// X3DH; if the peer sees them in the opposite order (the transport may
// reorder), it ends on the first session while the sender holds the second,
// and the peer's reply is undecryptable: lost.
func TestReviewConcurrentFirstSendsForkSession(t *testing.T) {
	gs := &gatedStore{Store: persistence.NewMemory()}
	w := newWorld(t, transport.Faults{}, seeded(1, func(o *ratchetd.Options) { o.Store = gs }))
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)

	gs.mu.Lock()
	gs.gate = make(chan struct{})
	gs.mu.Unlock()
	mark := w.tap.mark()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, text := range []string{"c1", "c2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = alice.Send(bob.Identity(), []byte(text))
		}()
		time.Sleep(20 * time.Millisecond) // c1's request reaches the supervisor first
	}
	// Give the supervisor time to see both requests while the first
	// session's commit is held.
	deadline := time.Now().Add(500 * time.Millisecond)
	for w.eng.Stats().X3DHActive < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	gs.close()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	x3dh := w.eng.Stats().X3DHActive

	// The network delivers the two envelopes in the opposite order.
	envs := w.tap.envelopesTo(mark, transport.PartitionedTopic(bob.Identity()))
	if len(envs) != 2 {
		t.Fatalf("%d envelopes to bob, want 2", len(envs))
	}
	w.mem.DropAll()
	for i := len(envs) - 1; i >= 0; i-- {
		if err := w.mem.Publish(envs[i]); err != nil {
			t.Fatal(err)
		}
	}
	w.deliver()
	mustSend(t, bob, alice, "reply")
	w.deliver()
	mustSend(t, alice, bob, "c3")
	w.deliver()

	got := w.received(bob)
	if count(got, "c1") != 1 || count(got, "c2") != 1 || count(got, "c3") != 1 || !slices.Equal(w.received(alice), []string{"reply"}) {
		t.Fatalf("%d active X3DH for one first contact; bob got %q, alice got %q (want c1, c2, c3 and the reply)", x3dh, got, w.received(alice))
	}
}

// A replayed old envelope that carries an X3DH header with an ephemeral key
// other than the one the current session was made from is taken as a new
// X3DH (PeerSession.decryptFresh): it authenticates (it is genuine), so the
// current session is replaced by a rolled-back one and the old plaintext is
// delivered to the application a second time. Anyone who recorded the
// envelope can do this; the conversation then loses the peer's next
// messages.
func TestReviewReplayedX3DHRollsBackSession(t *testing.T) {
	w := newWorld(t, transport.Faults{}, seeded(2))
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	bobTopic := transport.PartitionedTopic(bob.Identity())

	mark := w.tap.mark()
	mustSend(t, alice, bob, "first")
	first := w.tap.envelopesTo(mark, bobTopic)[0] // X3DH with EK1
	w.deliver()
	mustSend(t, bob, alice, "reply1")
	w.deliver()

	// Bob loses his session; Alice is told (bundle advert) and runs a fresh
	// X3DH (EK2) against the same signed prekey.
	w.restartWith(func() { corruptSessions(t, w, bob, alice) }, seeded(3))
	alice, bob = w.reload(alice), w.reload(bob)
	mustSend(t, alice, bob, "lost")
	w.deliver()
	mustSend(t, alice, bob, "second")
	w.deliver()
	mustSend(t, bob, alice, "reply2")
	w.deliver()
	if got := w.received(bob); !slices.Contains(got, "second") {
		t.Fatalf("setup: recovery failed, bob got %q", got)
	}

	// Replay of the very first envelope.
	if err := w.mem.Publish(first); err != nil {
		t.Fatal(err)
	}
	w.deliver()
	mustSend(t, alice, bob, "third")
	w.deliver()
	got := w.received(bob)
	if count(got, "first") != 1 || !slices.Contains(got, "third") {
		t.Fatalf("after replaying the first envelope bob got %q (want \"first\" once, and \"third\")", got)
	}
}

// The "stale" mark that a bundle advert puts on the sessions with a peer
// installation is kept in the SessionSupervisor's memory only. When that
// supervisor is passivated (idle for 2×SessionIdleTimeout) the mark is lost,
// so the sender goes back to the session the peer told it it does not have;
// the peer's next advert is rate-limited (2 h), so every message until then
// is lost.
func TestReviewStaleMarkLostOnPassivation(t *testing.T) {
	idle := func(o *ratchetd.Options) { o.SessionIdleTimeout = 20 * time.Millisecond }
	w := newWorld(t, transport.Faults{}, seeded(4, idle))
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "hi")
	w.deliver()
	mustSend(t, bob, alice, "hi back")
	w.deliver()

	w.restartWith(func() { corruptSessions(t, w, bob, alice) }, seeded(5, idle))
	alice, bob = w.reload(alice), w.reload(bob)
	mustSend(t, alice, bob, "lost")
	w.deliver() // bob cannot decrypt: he advertises his bundle; alice marks the session stale
	if w.eng.Stats().Adverts != 1 {
		t.Fatalf("setup: %d adverts", w.eng.Stats().Adverts)
	}

	// Alice stays idle long enough for her supervisor to be passivated.
	deadline := time.Now().Add(3 * time.Second)
	for w.eng.Stats().SupervisorPassivations < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if w.eng.Stats().SupervisorPassivations < 2 {
		t.Fatal("setup: supervisors not passivated")
	}
	mustSend(t, alice, bob, "after a pause")
	w.deliver()
	mustSend(t, alice, bob, "and again")
	w.deliver()
	got := w.received(bob)
	if !slices.Contains(got, "after a pause") || !slices.Contains(got, "and again") {
		t.Fatalf("bob got %q: alice went back to the session bob had lost", got)
	}
}

// DH-fallback messages have no ratchet to reject a replay; the replay cache
// that stands in for one is in memory only, so after a restart a replayed
// DH envelope is delivered to the application a second time.
func TestReviewDHFallbackReplayAfterRestart(t *testing.T) {
	w := newWorld(t, transport.Faults{}, seeded(6))
	alice, bob := w.account(), w.account()
	mark := w.tap.mark()
	r := mustSend(t, alice, bob, "no bundle yet")
	if !r.DHFallback {
		t.Fatalf("setup: %+v", r)
	}
	env := w.tap.envelopesTo(mark, transport.PartitionedTopic(bob.Identity()))[0]
	w.deliver()
	w.restart(seeded(7))
	bob = w.reload(bob)
	if err := w.mem.Publish(env); err != nil {
		t.Fatal(err)
	}
	w.deliver()
	if got := w.received(bob); count(got, "no bundle yet") != 1 {
		t.Fatalf("bob got %q: a replayed DH message was delivered again", got)
	}
}

// Badger is opened with an 8 MiB memtable, so one transaction holds at most
// 15% of it (~1.26 MB). A decrypt commits the inbox record (the whole
// plaintext) together with the skipped keys in one request, which the
// Committer never splits: a message near the transport's 1 MiB cap that
// arrives after a few hundred lost messages (well within MaxSkip) makes a
// transaction Badger refuses (ErrTxnTooBig), every time. The message is
// dropped (the transport already counts it delivered).
func TestReviewLargeMessageAfterGapNeverCommits(t *testing.T) {
	dir := t.TempDir()
	w := newWorld(t, transport.Faults{}, seeded(8, func(o *ratchetd.Options) { o.Store, o.Dir, o.NoSync = nil, dir, true }))
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "hello")
	w.deliver()
	mustSend(t, bob, alice, "hello back")
	w.deliver()

	const lost = 990 // MaxSkip is 1000
	for i := range lost {
		if _, err := alice.Send(bob.Identity(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	w.mem.DropAll()
	big := bytes.Repeat([]byte{'x'}, 1_045_000) // the envelope stays under the 1 MiB cap
	if _, err := alice.Send(bob.Identity(), big); err != nil {
		t.Fatal(err)
	}
	w.deliver()
	for _, m := range w.messages(bob) {
		if bytes.Equal(m.Payload, big) {
			return
		}
	}
	t.Fatalf("the large message was not delivered (stats %+v)", w.eng.Stats())
}

// A peer's bundle may list up to MaxBundleEntries (16) installations, and
// every new one is stored, enabled, in the device registry (memory and
// store) with no bound per identity: one peer that attaches a bundle with 16
// fresh installation ids to each message grows the registry without limit
// (and every send to it sorts the whole registry, activeDevices).
func TestReviewDeviceRegistryUnboundedPerPeer(t *testing.T) {
	w := newWorld(t, transport.Faults{}, seeded(9))
	bob := w.account()
	mallory, err := keys.GenerateKey(newSeededRand(10))
	if err != nil {
		t.Fatal(err)
	}
	spk, err := keys.GenerateKey(newSeededRand(11))
	if err != nil {
		t.Fatal(err)
	}
	to := bob.Identity()
	const sends, perBundle = 40, 16
	for i := range sends {
		var entries []bundle.Entry
		for j := range perBundle {
			entries = append(entries, bundle.Entry{InstallationID: fmt.Sprintf("%08d-0000-4000-8000-%012d", i, j), SignedPreKey: spk.Public, Version: 1, ProtocolVersion: 1})
		}
		b, err := bundle.Sign(mallory, entries, w.clock.Now().UnixNano()+int64(i))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := proto.Marshal(&messages.ProtocolMessage{InstallationId: entries[0].InstallationID, Bundles: []*messages.Bundle{b.Proto()}})
		if err != nil {
			t.Fatal(err)
		}
		env, err := transport.SealWith(mallory, transport.PartitionedTopic(to), &to, raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.mem.Publish(env); err != nil {
			t.Fatal(err)
		}
	}
	w.deliver()
	devs, err := bob.Devices(mallory.Public)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) > 4*perBundle {
		t.Fatalf("one peer identity has %d installations in bob's registry after %d messages", len(devs), sends)
	}
}
