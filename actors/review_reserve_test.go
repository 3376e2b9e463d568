package actors

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// reserveRig is newReviewPair with keys reserved (the default SendReserve)
// and a short CommitTimeout, recording what b's application receives.
type reserveRig struct {
	*reviewPair
	mu  sync.Mutex
	got []string
}

func newReserveRig(t *testing.T) *reserveRig {
	t.Helper()
	r := &reserveRig{}
	r.reviewPair = newReviewPairWith(t, Config{BundleResignInterval: time.Hour, CommitTimeout: 300 * time.Millisecond, RequestTimeout: 3 * time.Second},
		func(m Message) {
			r.mu.Lock()
			r.got = append(r.got, string(m.Payload))
			r.mu.Unlock()
		})
	return r
}

func (r *reserveRig) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// TestReviewReserveLateCommitNoReuse (a check that holds): sends below the
// durable reservation go while the store is wedged; the first one past it
// waits for its commit, which answers late: STORE, nothing published; a
// send while that commit is pending is refused too; once it lands the
// chain resumes past its reservation, and b decrypts every message that
// was reported sent, each once.
func TestReviewReserveLateCommitNoReuse(t *testing.T) {
	r := newReserveRig(t)
	defer r.close()
	var want []string
	for i := range 3 { // n 0 (reserves to 2), 1, 2 (reserves to 6)
		want = append(want, fmt.Sprint("m", i))
		r.send(t, r.a, r.bID, want[i])
	}
	r.store.armed.Store(true)
	for i := 3; i < 6; i++ { // covered: no commit
		want = append(want, fmt.Sprint("m", i))
		r.send(t, r.a, r.bID, want[i])
	}
	select {
	case <-r.store.entered:
		t.Fatal("a send below the reservation reached the store")
	default:
	}
	before := r.tr.Pending()
	res := <-r.sendAsync("late") // n 6: its commit stalls past CommitTimeout
	if rep, _ := res.(*messages.SendReport); rep == nil || rep.Error == messages.ErrorCode_OK {
		t.Fatalf("the send whose commit is late was reported sent: %v", res)
	}
	res = <-r.sendAsync("while pending")
	if rep, _ := res.(*messages.SendReport); rep == nil || rep.Error == messages.ErrorCode_OK {
		t.Fatalf("a send while the late commit is pending was reported sent: %v", res)
	}
	if n := r.tr.Pending() - before; n != 0 {
		t.Fatalf("%d envelopes published without a durable state", n)
	}
	r.store.armed.Store(false)
	close(r.store.gate) // the late commit lands
	time.Sleep(100 * time.Millisecond)
	for i := range 4 {
		want = append(want, fmt.Sprint("after ", i))
		r.send(t, r.a, r.bID, want[len(want)-1])
	}
	r.tr.DeliverAll(0)
	deadline := time.Now().Add(5 * time.Second)
	for len(r.received()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.received(); !slices.Equal(got, want) {
		t.Fatalf("b got %q, want %q", got, want)
	}
}

// aSession is a's stored session record with b.
func (r *reserveRig) aSession(t *testing.T) *messages.SessionRecord {
	t.Helper()
	rec := &messages.SessionRecord{}
	if err := proto.Unmarshal(r.sessionRecord(t), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestReviewReserveStaleMarkAtStopUndoesRewind: a ResetSending whose stale
// mark could not be committed leaves staleWanted; at Stopping the session
// rewinds (stores its exact chain), then makes the stale mark through
// markStale, whose snapshot starts a NEW reservation from the rewound
// state (reserving = exactly(st), so r.upto <= st.Ns): the record stored
// at the end is ahead again, against "a session that passivates with
// reserved keys unused stores its exact chain". (Safe for keys; the peer
// skips the gap.)
func TestReviewReserveStaleMarkAtStopUndoesRewind(t *testing.T) {
	r := newReserveRig(t)
	defer r.close()
	r.third(t)         // b gets a's bundle, so that b can advertise to a
	for i := range 3 { // n 0..2: stored stepped to 6
		r.send(t, r.a, r.bID, fmt.Sprint("m", i))
	}
	r.tr.DropAll()
	if n := r.aSession(t).GetState().GetSendN(); n != 6 {
		t.Fatalf("stored send N %d, want 6 (reserved)", n)
	}
	// b advertises its bundle to a; a's stale mark is refused by the store.
	res := r.request(t, r.b, &messages.SendCommand{PeerIdentity: r.aID[:], Advertise: true})
	if rep, _ := res.(*messages.SendReport); rep == nil || rep.Error != messages.ErrorCode_OK {
		t.Fatalf("advert: %v", res)
	}
	r.store.refuse.Store(true)
	r.tr.DeliverAll(0)
	time.Sleep(200 * time.Millisecond)
	r.store.refuse.Store(false)
	if r.aSession(t).Stale {
		t.Fatal("the stale mark went through: staleWanted not set up")
	}
	if err := r.e.StopInstallation(r.a); err != nil {
		t.Fatal(err)
	}
	rec := r.aSession(t)
	t.Logf("after the stop: stale=%v send N %d", rec.Stale, rec.GetState().GetSendN())
	if !rec.Stale {
		t.Fatalf("the stale mark was not made at the stop")
	}
	if n := rec.GetState().GetSendN(); n != 3 {
		t.Fatalf("stored send N %d after the session stopped, want 3 (the keys used: rewind), the stale mark re-reserved", n)
	}
}

// reviewCrashCopy is the store as a kill -9 leaves it: a copy of every
// record now (no stop, hence no rewind).
func reviewCrashCopy(t *testing.T, st persistence.Store) *persistence.Memory {
	t.Helper()
	img := persistence.NewMemory()
	var ws []persistence.Write
	if err := st.Scan(nil, func(k, v []byte) error {
		ws = append(ws, persistence.Write{Key: bytes.Clone(k), Value: bytes.Clone(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := img.Commit(ws); err != nil {
		t.Fatal(err)
	}
	return img
}

// crashPair is an engine hosting a and b (a has b's bundle) on a memory
// store and a manual transport, recording what each application receives;
// crash abandons the engine and opens a new one on reviewCrashCopy of its
// store, as a kill -9 and a restart would.
type crashPair struct {
	*reviewPair
	cfg   Config
	store persistence.Store
	mu    sync.Mutex
	got   map[string][]Message
}

func newCrashPair(t *testing.T, cfg Config) *crashPair {
	t.Helper()
	c := &crashPair{cfg: cfg, store: persistence.NewMemory(), got: map[string][]Message{}}
	tr := transport.NewMemory(transport.MemoryOptions{Manual: true})
	p := &reviewPair{e: NewEngine(cfg, c.store, tr, c.handle), tr: tr}
	c.reviewPair = p
	var err error
	if p.a, p.aID, err = p.e.CreateInstallation(nil); err != nil {
		t.Fatal(err)
	}
	if p.b, p.bID, err = p.e.CreateInstallation(nil); err != nil {
		t.Fatal(err)
	}
	br, _ := p.request(t, p.b, &messages.BundleRequest{NowUnixNano: time.Now().UnixNano()}).(*messages.BundleReply)
	p.request(t, p.a, &messages.ImportBundle{Bundle: br.Bundle})
	return c
}

func (c *crashPair) handle(m Message) {
	c.mu.Lock()
	c.got[m.RecipientInstallation] = append(c.got[m.RecipientInstallation], m)
	c.mu.Unlock()
}

func (c *crashPair) received(id string) []string {
	return payloads(c.messages(id))
}

func (c *crashPair) messages(id string) []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got[id])
}

func (c *crashPair) crash(t *testing.T) {
	t.Helper()
	img := reviewCrashCopy(t, c.store)
	c.e.Close() // abandoned: its store is not the one reopened
	c.reopen(t, img)
}

// reopen opens a new engine on store and hosts the installations again.
func (c *crashPair) reopen(t *testing.T, store persistence.Store) {
	t.Helper()
	c.store = store
	c.e = NewEngine(c.cfg, c.store, c.tr, c.handle)
	if _, err := c.e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
}

func (c *crashPair) close() {
	c.e.Close()
	c.tr.Close()
}

// TestReviewReserveGapBoundedOverCrashes: found by review of a108b42, where
// a reservation was sized by the chain's Ns (SendReserve <= MaxSkip-1-
// MaxOutboxAhead bounded the gap of ONE crash only). Every restart loads
// the chain at its reserved position, and the first send reserved
// min(Ns, 64) keys again: if the process is killed after that commit and
// before the envelope reaches the peer (or the envelope is lost on a
// non-confirming transport), each crash burnt 64 keys, and 16 crashes in a
// row pushed the next message past the peer's MaxSkip (1000): the peer
// never decrypted it, nor anything later on that chain, nor a's next chain
// (its PN is as far). A reservation is now sized by the keys used since the
// load, so each such crash burns at most twice what it sent.
func TestReviewReserveGapBoundedOverCrashes(t *testing.T) {
	for _, reserve := range []int{-1, 0} {
		t.Run(fmt.Sprint("SendReserve=", reserve), func(t *testing.T) {
			cfg := Config{BundleResignInterval: time.Hour, SendReserve: reserve}
			c := newCrashPair(t, cfg)
			defer c.close()
			p, tr, received := c.reviewPair, c.tr, c.received
			a, aID, b, bID := p.a, p.aID, p.b, p.bID
			// deliver delivers what the transport holds and waits (a while)
			// for text to reach id's application. Unacknowledged messages
			// are delivered again after each restart: counts grow.
			deliver := func(id string, text string) {
				tr.DeliverAll(0)
				for deadline := time.Now().Add(time.Second); !slices.Contains(received(id), text) && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(50 * time.Millisecond)
			}
			for i := range 70 {
				p.send(t, a, bID, fmt.Sprint("m", i))
			}
			deliver(b, "m69")
			if !slices.Contains(received(b), "m69") {
				t.Fatalf("b got %d of 70 before the crashes", len(received(b)))
			}
			const crashes = 16
			for i := range crashes {
				// The send commits a's session (a fresh reservation after
				// the restart), then the process dies before its envelope
				// reaches b.
				p.send(t, a, bID, fmt.Sprint("lost ", i))
				tr.DropAll()
				c.crash(t)
			}
			rec := &messages.SessionRecord{}
			var n uint32
			c.store.Scan(persistence.SessionPrefix(a, bID[:]), func(_, v []byte) error {
				if proto.Unmarshal(v, rec) == nil {
					n = rec.GetState().GetSendN()
				}
				return nil
			})
			p.send(t, a, bID, "after the crashes")
			deliver(b, "after the crashes")
			t.Logf("first message after %d crashes: n %d (b's next expected n 70); b got %v", crashes, n, slices.Contains(received(b), "after the crashes"))
			// The run's own reservation (at most 64) once, then the sent
			// key and at most one reserved per crash.
			if reserve >= 0 && n > 70+64+2*crashes {
				t.Errorf("n %d after %d crashes of one send each: more than the run's reservation and two keys per crash", n, crashes)
			}
			if !slices.Contains(received(b), "after the crashes") {
				t.Errorf("b never decrypts the first message after %d crashes (n %d, b's Nr 70): the gap the reservations left exceeds MaxSkip", crashes, n)
			}
			// Not healed by a round trip: b writes (a ratchets), a answers
			// on a new chain whose PN is as far past b's Nr.
			p.send(t, b, aID, "from b")
			deliver(a, "from b")
			if !slices.Contains(received(a), "from b") {
				t.Fatalf("a did not get b's message")
			}
			p.send(t, a, bID, "on the next chain")
			deliver(b, "on the next chain")
			if !slices.Contains(received(b), "on the next chain") {
				t.Errorf("b cannot decrypt a's next chain either (its PN is past MaxSkip): the session is broken for good")
			}
		})
	}
}
