package actors

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// gatedCommitStore is a Memory store whose Commit, once armed, waits until
// the gate is opened (a slow fsync): a PeerSession that flushes then waits
// in deps.commit, and what is queued behind it in its mailbox waits too.
type gatedCommitStore struct {
	*persistence.Memory
	armed   atomic.Bool
	refuse  atomic.Bool // every commit fails (one let through the gate, and the Committer's one-by-one retries of its batch)
	gate    chan struct{}
	entered chan struct{} // one value per commit that waited
}

func newGatedCommitStore() *gatedCommitStore {
	return &gatedCommitStore{Memory: persistence.NewMemory(), gate: make(chan struct{}), entered: make(chan struct{}, 64)}
}

func (s *gatedCommitStore) Commit(ws []persistence.Write) error {
	if s.armed.Load() {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-s.gate
	}
	if s.refuse.Load() {
		return errGatedRefused
	}
	return s.Memory.Commit(ws)
}

var errGatedRefused = errors.New("gated store: commit refused after a stall")

// reviewPair is an engine on a gated store and a manual in-memory
// transport (nothing is delivered unless the test asks) hosting a and b,
// where a knows b's bundle.
type reviewPair struct {
	e        *Engine
	store    *gatedCommitStore
	tr       *transport.Memory
	a, b     string
	aID, bID keys.PublicKey
}

func newReviewPair(t *testing.T) *reviewPair {
	t.Helper()
	// The bundle a attaches stays fresh for the whole test: a send then
	// waits for its encrypts only, not for the publisher. The tests stall
	// sends at their commits: no key is reserved, so every send commits.
	return newReviewPairWith(t, Config{BundleResignInterval: time.Hour, SendReserve: -1}, func(Message) {})
}

// newReviewPairWith is newReviewPair with the engine's Config and handler.
func newReviewPairWith(t *testing.T, cfg Config, handler func(Message)) *reviewPair {
	t.Helper()
	store := newGatedCommitStore()
	tr := transport.NewMemory(transport.MemoryOptions{Manual: true})
	e := NewEngine(cfg, store, tr, handler)
	p := &reviewPair{e: e, store: store, tr: tr}
	var err error
	if p.a, p.aID, err = e.CreateInstallation(nil); err != nil {
		t.Fatal(err)
	}
	if p.b, p.bID, err = e.CreateInstallation(nil); err != nil {
		t.Fatal(err)
	}
	res, err := e.Request(p.b, &messages.BundleRequest{NowUnixNano: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	br, _ := res.(*messages.BundleReply)
	if br == nil || br.Bundle == nil {
		t.Fatal("no bundle of b")
	}
	res, err = e.Request(p.a, &messages.ImportBundle{Bundle: br.Bundle})
	if err != nil {
		t.Fatal(err)
	}
	if ack, _ := res.(*messages.Ack); ack == nil || ack.Error != messages.ErrorCode_OK {
		t.Fatalf("import of b's bundle: %v", res)
	}
	return p
}

func (p *reviewPair) close() {
	p.store.armed.Store(false)
	select {
	case <-p.store.gate:
	default:
		close(p.store.gate)
	}
	p.e.Close()
	p.tr.Close()
}

// request asks installation id and fails the test on an error.
func (p *reviewPair) request(t *testing.T, id string, msg any) any {
	t.Helper()
	res, err := p.e.Request(id, msg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// send sends payload and requires one envelope published.
func (p *reviewPair) send(t *testing.T, from string, to keys.PublicKey, payload string) {
	t.Helper()
	rep, _ := p.request(t, from, &messages.SendCommand{PeerIdentity: to[:], Payload: []byte(payload)}).(*messages.SendReport)
	if rep == nil || rep.Error != messages.ErrorCode_OK || rep.Envelopes != 1 {
		t.Fatalf("send %q: %v", payload, rep)
	}
}

// third hosts an installation c whose bundle a has, and gives b a's
// bundle, so that a can have two SessionSupervisors and b can write to a.
func (p *reviewPair) third(t *testing.T) (string, keys.PublicKey) {
	t.Helper()
	bundleOf := func(id string) *messages.Bundle {
		t.Helper()
		br, _ := p.request(t, id, &messages.BundleRequest{NowUnixNano: time.Now().UnixNano()}).(*messages.BundleReply)
		if br == nil || br.Bundle == nil {
			t.Fatal("no bundle")
		}
		return br.Bundle
	}
	c, cID, err := p.e.CreateInstallation(nil)
	if err != nil {
		t.Fatal(err)
	}
	p.request(t, p.a, &messages.ImportBundle{Bundle: bundleOf(c)})
	p.request(t, p.b, &messages.ImportBundle{Bundle: bundleOf(p.a)})
	return c, cID
}

// duringStop is what deliverDuringStop saw.
type duringStop struct {
	stopErr  error
	took     time.Duration // StopInstallation's
	dErr     error         // the gateway's answer
	answered bool          // within 15 s
}

// deliverDuringStop has a send to b and to c, lets produce leave an
// envelope for a in the transport, and hands it to a's gateway while a
// stops slowly: a's send to c is in a held commit, so its supervisor for c
// waits for its session, while the one for b (idle) terminates at once.
func (p *reviewPair) deliverDuringStop(t *testing.T, produce func()) duringStop {
	t.Helper()
	e := p.e
	_, cID := p.third(t)
	p.send(t, p.a, p.bID, "a to b") // a sends to b on a session it made
	p.send(t, p.a, cID, "a to c")   // a has a supervisor for c too
	p.tr.DropAll()
	produce()
	env := p.tr.DropOne()
	if env == nil {
		t.Fatal("b's envelope is not in the transport")
	}
	d, err := transport.Open(env, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.get(p.a)
	if err != nil {
		t.Fatal(err)
	}
	handler := e.gateway(h.pid) // what a's subscription calls
	p.store.armed.Store(true)
	go func() { _, _ = e.Request(p.a, &messages.SendCommand{PeerIdentity: cID[:], Payload: []byte("slow")}) }()
	select {
	case <-p.store.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the send to c never reached the store")
	}
	var r duringStop
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- e.StopInstallation(p.a) }()
	time.Sleep(200 * time.Millisecond)
	delivered := make(chan error, 1)
	go func() { delivered <- handler(d) }() // a handler call under way when the stop began
	time.Sleep(200 * time.Millisecond)
	p.store.armed.Store(false)
	close(p.store.gate)
	select {
	case r.stopErr = <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("StopInstallation never returned")
	}
	r.took = time.Since(start)
	select {
	case r.dErr = <-delivered:
		r.answered = true
	case <-time.After(15 * time.Second):
	}
	return r
}

// advertDuringStop is deliverDuringStop with b's bundle advert to a (what
// b sends once it cannot decrypt a's messages), and a stop that succeeds.
func (p *reviewPair) advertDuringStop(t *testing.T) (error, bool) {
	t.Helper()
	r := p.deliverDuringStop(t, func() {
		p.request(t, p.b, &messages.SendCommand{PeerIdentity: p.aID[:], Advertise: true})
	})
	if r.stopErr != nil {
		t.Fatalf("StopInstallation: %v", r.stopErr)
	}
	return r.dErr, r.answered
}

// sendAsync sends payload from a to b and returns the report's channel.
func (p *reviewPair) sendAsync(payload string) <-chan any {
	out := make(chan any, 1)
	go func() {
		res, err := p.e.Request(p.a, &messages.SendCommand{PeerIdentity: p.bID[:], Payload: []byte(payload)})
		if err != nil {
			out <- err
			return
		}
		out <- res
	}()
	return out
}

// TestReviewReleasedEncryptIsNotNoSession: a send whose encrypt is still
// queued at its PeerSession when the installation stops has its ask failed
// by asks.release with ErrClosed. The send's continuation takes that for
// an installation it could not encrypt for ("?"), and the report says
// NO_SESSION: Account.Send returns ErrNotDelivered ("no installation of
// the peer could be encrypted for"), which serve answers FailedPrecondition
// (do not retry), for a send that only met the engine stopping. (Before
// f4e7ea5 the same send timed out: ErrTimeout, Unavailable.)
func TestReviewReleasedEncryptIsNotNoSession(t *testing.T) {
	p := newReviewPair(t)
	defer p.close()

	// A first send makes the session (its X3DH commit goes through).
	r1 := <-p.sendAsync("one")
	if rep, _ := r1.(*messages.SendReport); rep == nil || rep.Error != messages.ErrorCode_OK || rep.Envelopes != 1 {
		t.Fatalf("first send: %v", r1)
	}
	before := p.sessionRecord(t)
	published := p.tr.Pending()
	// The second send's encrypt is held by the session, whose batch commit
	// waits for the store; the third send's encrypt queues behind it.
	p.store.armed.Store(true)
	r2 := p.sendAsync("two")
	select {
	case <-p.store.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the second send's commit never reached the store")
	}
	r3 := p.sendAsync("three")
	deadline := time.Now().Add(5 * time.Second)
	for p.e.Stats().MailboxDepth < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the third send's encrypt never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)

	// The installation stops (StopInstallation; Quiesce's poison pill does
	// the same once the installation reaches it).
	var wg sync.WaitGroup
	wg.Add(1)
	var stopErr error
	go func() { defer wg.Done(); stopErr = p.e.StopInstallation(p.a) }()
	time.Sleep(100 * time.Millisecond) // the Stop reaches the session, behind its commit
	p.store.armed.Store(false)
	close(p.store.gate)
	wg.Wait()
	if stopErr != nil {
		t.Fatalf("StopInstallation: %v", stopErr)
	}

	// The second send's encrypt was committed (the session's state moved
	// on: its message key is spent), and its ciphertext never left.
	committed := string(p.sessionRecord(t)) != string(before)
	sent := p.tr.Pending() - published
	t.Logf("after the stop: second encrypt committed %v, envelopes published since %d", committed, sent)

	got := func(c <-chan any) any {
		select {
		case r := <-c:
			return r
		case <-time.After(15 * time.Second):
			t.Fatal("a send got no answer")
		}
		return nil
	}
	reports := 0
	for i, c := range []<-chan any{r2, r3} {
		r := got(c)
		t.Logf("send %d: %v", i+2, r)
		rep, _ := r.(*messages.SendReport)
		if rep == nil {
			continue // an error (closed, timed out): not a verdict on the peer
		}
		reports++
		if rep.Error == messages.ErrorCode_NO_SESSION {
			t.Errorf("send %d, cut off by the installation's stop, is reported NO_SESSION (Account.Send: ErrNotDelivered; serve: FailedPrecondition), failed %q: %s",
				i+2, rep.Failed, rep.Detail)
		}
	}
	if reports == 0 {
		t.Error("neither send got a report: the test showed nothing")
	}
}

// sessionRecord is a's stored session record with b.
func (p *reviewPair) sessionRecord(t *testing.T) []byte {
	t.Helper()
	var v []byte
	n := 0
	if err := p.store.Scan(persistence.SessionPrefix(p.a, p.bID[:]), func(_, val []byte) error {
		v = append([]byte(nil), val...)
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d session records of a with b, want 1", n)
	}
	return v
}

// TestReviewStopInstallationDuringDeliveryNeverEnds: StopInstallation
// cancels the installation's subscriptions, but a handler call already in
// progress (the memory transport runs up to 64 per subscription, a node up
// to 256) goes on to the gateway, which checks only e.closed (Quiesce) and
// queues the delivery behind the Stop. A stopping actor still runs its
// user messages until its children have terminated: the installation
// takes the delivery and asks the sender's SessionSupervisor, which has
// already terminated, so children.forward spawns a new one. That child is
// never told to stop, so the installation never terminates:
// StopInstallation returns only at StopFuture's 10 s timeout, with an
// error; the actor, its new supervisor and session stay in memory, and the
// installation's name stays registered, so LoadInstallations cannot host
// it again. (Here another supervisor, whose session is in a slow commit,
// keeps the installation stopping long enough; under load any slow child
// does.)
func TestReviewStopInstallationDuringDeliveryNeverEnds(t *testing.T) {
	p := newReviewPair(t)
	defer p.close()
	e := p.e
	// An envelope of b for a, handed over while a stops.
	r := p.deliverDuringStop(t, func() { p.send(t, p.b, p.aID, "b to a") })
	stopErr, took, dErr := r.stopErr, r.took, r.dErr
	if !r.answered {
		dErr = errors.New("no answer")
	}
	_, _ = e.LoadInstallations()
	_, hostErr := e.get(p.a)
	t.Logf("StopInstallation: %v after %v; the delivery: %v; a hosted again after LoadInstallations: %v", stopErr, took.Round(time.Millisecond), dErr, hostErr)
	if stopErr != nil || took > 5*time.Second {
		t.Errorf("StopInstallation with a delivery under way took %v and returned %v: the stopping installation spawned a new SessionSupervisor for the delivery and never terminated",
			took.Round(time.Millisecond), stopErr)
	}
	if hostErr != nil {
		t.Errorf("the stopped installation cannot be hosted again: %v", hostErr)
	}
	// The installation was stopping when the delivery came: not taken, so
	// its sender offers it again (a delivery answered "taken" without
	// being processed would be lost).
	if !errors.Is(dErr, ErrClosed) {
		t.Errorf("the delivery during the stop was answered %v; want not taken (ErrClosed)", dErr)
	}
}
