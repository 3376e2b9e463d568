package actors

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// TestLateCommitIsNotOverwritten: a PeerSession's commit that does not
// answer within CommitTimeout may still be applied later. The session used
// to reload the store's older state at once and go on: its next commit,
// queued behind the late one, then overwrote it with that older state.
// Here that took b's stored chain back from m3's state (recv_n 5) to m0's
// (2), while the late commit's skipped keys (message keys the record no
// longer lists: never deleted) and m3's inbox record stayed, and m3, offered
// again, was decrypted and delivered a second time. Now the session writes
// nothing and answers STORE until the late commit has answered, then
// reloads what the store holds.
//
// b receives m3 first (skipping m0..m2: their keys are stored with the
// state); its commit hangs past CommitTimeout; m0 arrives meanwhile; then
// the store answers. Every message must reach b's application once, and b,
// hosted again, must read its session back whole.
func TestLateCommitIsNotOverwritten(t *testing.T) {
	r := newLateRig(t)
	e, store, b, send := r.e, r.store, r.b, r.send
	handler := r.handler()
	if err := handler(send("hello")); err != nil {
		t.Fatalf("first message: %v", err)
	}
	m := []transport.Delivery{send("m0"), send("m1"), send("m2"), send("m3")}

	// m3's commit hangs past CommitTimeout.
	store.armed.Store(true)
	first := make(chan error, 1)
	go func() { first <- handler(m[3]) }()
	select {
	case <-store.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("m3's commit never reached the store")
	}
	if err := <-first; err == nil {
		t.Fatal("m3 was taken though its commit never answered")
	}
	// m0 arrives while that commit may still land.
	second := make(chan error, 1)
	go func() { second <- handler(m[0]) }()
	time.Sleep(100 * time.Millisecond)
	r.release() // the late commit is applied now
	<-second
	time.Sleep(100 * time.Millisecond)
	// What the store holds now: m3's state (the next key is m4's, 5), not
	// an older one written after it.
	recvN := r.recvN()
	if len(recvN) != 1 || recvN[0] != 5 {
		t.Errorf("b's stored session after m3's late commit landed: recv_n %v, want [5] (m3's state): a write made meanwhile from the older state overwrote it", recvN)
	}

	// The sender offers what was not taken again, in order.
	for i, d := range m[:3] {
		if err := handler(d); err != nil {
			t.Fatalf("m%d offered again: %v", i, err)
		}
	}
	_ = handler(m[3]) // taken or a duplicate: its plaintext is in b's inbox either way

	// b hosted again reads its session back.
	if err := e.StopInstallation(b); err != nil {
		t.Fatal(err)
	}
	if _, err := e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
	if err := r.handler()(send("m4")); err != nil { // loads the session
		t.Fatalf("m4 after b was hosted again: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // redelivery of the inbox
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := e.Stats().Corrupt; c != 0 {
		t.Errorf("%d stored records read back as corrupt: a later write overwrote the late commit's state", c)
	}
	for _, text := range []string{"hello", "m0", "m1", "m2", "m3", "m4"} {
		if r.got[text] == 0 {
			t.Errorf("%q never reached b's application (got %v)", text, r.got)
		}
	}
}

// TestLateCommitOutlivesItsSession: a session stopped (passivated, or its
// installation stopped) while a commit of its answered late used to go at
// once; its successor read the store before that commit landed and wrote
// after it, taking the state back as above. The stopping session now waits
// for the late commit (at most another CommitTimeout) while its parent
// holds the requests for it.
func TestLateCommitOutlivesItsSession(t *testing.T) {
	r := newLateRig(t)
	e, store, b, send, handlerOf, release := r.e, r.store, r.b, r.send, r.handler, r.release
	if err := handlerOf()(send("hello")); err != nil {
		t.Fatalf("first message: %v", err)
	}
	m := []transport.Delivery{send("m0"), send("m1"), send("m2"), send("m3")}
	store.armed.Store(true)
	if err := handlerOf()(m[3]); err == nil {
		t.Fatal("m3 was taken though its commit never answered")
	}

	// b stops while m3's commit is still unanswered.
	stopped := make(chan error, 1)
	go func() { stopped <- e.StopInstallation(b) }()
	select {
	case err := <-stopped:
		// Gone at once (the old behaviour): hosted again, b reads the
		// store now, before m3's commit lands, and m0 follows.
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.LoadInstallations(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- handlerOf()(m[0]) }()
		time.Sleep(100 * time.Millisecond)
		release()
		<-done
	case <-time.After(200 * time.Millisecond):
		// Waiting for the late commit: it lands, then b stops.
		release()
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if _, err := e.LoadInstallations(); err != nil {
			t.Fatal(err)
		}
		_ = handlerOf()(m[0])
	}
	time.Sleep(100 * time.Millisecond)
	recvN := r.recvN()
	if len(recvN) != 1 || recvN[0] != 5 {
		t.Errorf("b's stored session after its successor took m0: recv_n %v, want [5] (m3's state, m0 from a skipped key): the successor read the state from before the late commit and wrote after it", recvN)
	}
}

// lateRig is an engine on a gated store (CommitTimeout 300 ms) and a manual
// memory transport, hosting a and b, where a has b's bundle; got counts
// what reached b's application, by payload.
type lateRig struct {
	t        *testing.T
	e        *Engine
	store    *gatedCommitStore
	tr       *transport.Memory
	a, b     string
	aID, bID keys.PublicKey
	mu       sync.Mutex
	got      map[string]int
	released bool
}

func newLateRig(t *testing.T) *lateRig { return newLateRigWith(t, Config{}) }

// newLateRigWith is newLateRig with more of the engine's Config.
func newLateRigWith(t *testing.T, cfg Config) *lateRig {
	t.Helper()
	r := &lateRig{t: t, store: newGatedCommitStore(), tr: transport.NewMemory(transport.MemoryOptions{Manual: true}), got: map[string]int{}}
	cfg.BundleResignInterval = time.Hour
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = 300 * time.Millisecond
	}
	r.e = NewEngine(cfg, r.store, r.tr, func(m Message) {
		r.mu.Lock()
		r.got[string(m.Payload)]++
		r.mu.Unlock()
	})
	t.Cleanup(func() {
		r.release()
		r.e.Close()
		r.tr.Close()
	})
	var err error
	if r.a, r.aID, err = r.e.CreateInstallation(nil); err != nil {
		t.Fatal(err)
	}
	if r.b, r.bID, err = r.e.CreateInstallation(nil); err != nil {
		t.Fatal(err)
	}
	res, err := r.e.Request(r.b, &messages.BundleRequest{NowUnixNano: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	br, _ := res.(*messages.BundleReply)
	if br == nil || br.Bundle == nil {
		t.Fatal("no bundle of b")
	}
	if _, err := r.e.Request(r.a, &messages.ImportBundle{Bundle: br.Bundle}); err != nil {
		t.Fatal(err)
	}
	return r
}

// release lets the store's commits through (once).
func (r *lateRig) release() { r.releaseWith(false) }

// releaseWith is release; refuse: the commit waiting at the gate, and every
// later one, fails (a commit that answers late, refused).
func (r *lateRig) releaseWith(refuse bool) {
	if !r.released {
		r.released = true
		r.store.refuse.Store(refuse)
		r.store.armed.Store(false)
		close(r.store.gate)
	}
}

// sendReport has a send text to b and returns its report.
func (r *lateRig) sendReport(text string) *messages.SendReport {
	r.t.Helper()
	res, err := r.e.Request(r.a, &messages.SendCommand{PeerIdentity: r.bID[:], Payload: []byte(text)})
	rep, _ := res.(*messages.SendReport)
	if err != nil || rep == nil {
		r.t.Fatalf("send %q: %v %v", text, res, err)
	}
	return rep
}

// send has a send text to b and returns its envelope, held by the
// transport, as b's gateway would get it.
func (r *lateRig) send(text string) transport.Delivery {
	r.t.Helper()
	if rep := r.sendReport(text); rep.Error != messages.ErrorCode_OK {
		r.t.Fatalf("send %q: %v %s", text, rep.Error, rep.Detail)
	}
	env := r.tr.DropOne()
	if env == nil {
		r.t.Fatalf("send %q: nothing in the transport", text)
	}
	r.tr.DropAll() // a's other envelopes (bundle adverts), if any
	d, err := transport.Open(env, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return d
}

// handler is the gateway of b as now hosted.
func (r *lateRig) handler() transport.Handler {
	r.t.Helper()
	h, err := r.e.get(r.b)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.e.gateway(h.pid)
}

// storedSessions returns b's stored session records with a.
func (r *lateRig) storedSessions() []*messages.SessionRecord {
	r.t.Helper()
	var out []*messages.SessionRecord
	if err := r.store.Scan(persistence.SessionPrefix(r.b, r.aID[:]), func(_, v []byte) error {
		rec := &messages.SessionRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// recvN lists the recv_n of b's stored sessions with a.
func (r *lateRig) recvN() []uint32 {
	var out []uint32
	for _, rec := range r.storedSessions() {
		out = append(out, rec.GetState().GetRecvN())
	}
	return out
}
