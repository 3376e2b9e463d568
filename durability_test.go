package ratchetd_test

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// durableWorld is a world whose engine keeps its state in Badger in a
// temporary directory.
func durableWorld(t *testing.T, tweak func(*ratchetd.Options)) (*world, string) {
	dir := t.TempDir()
	w := newWorld(t, transport.Faults{}, func(o *ratchetd.Options) {
		o.Store = nil
		o.Dir = dir
		if tweak != nil {
			tweak(o)
		}
	})
	return w, dir
}

// Rule 4 and 7: an engine reopened on the same directory resumes every
// conversation with no new X3DH; a second open of the directory is refused.
func TestDurableRestartResumes(t *testing.T) {
	w, dir := durableWorld(t, nil)
	alice, bob := w.account(), w.account()
	converse(t, w, alice, bob)
	if _, err := ratchetd.Open(ratchetd.Options{Dir: dir}); !errors.Is(err, ratchetd.ErrLocked) {
		t.Fatalf("second open of the directory: %v, want ErrLocked", err)
	}
	w.restart(func(o *ratchetd.Options) { o.Store, o.Dir = nil, dir })
	alice, bob = w.reload(alice), w.reload(bob)
	mark := w.tap.mark()
	mustSend(t, alice, bob, "three")
	mustSend(t, bob, alice, "four")
	for _, pm := range w.tap.since(mark) {
		for _, e := range pm.EncryptedMessage {
			if e.X3DhHeader != nil || e.DrHeader == nil {
				t.Fatalf("a new X3DH after restart: %v", e)
			}
		}
	}
	resumed(t, w, alice, bob, "a restart")
}

// Rule 2: the plaintext is committed with the state; an unacknowledged
// message is delivered again after a restart, with the same id.
func TestDurableInboxRedelivery(t *testing.T) {
	manual := func(o *ratchetd.Options) { o.ManualAck = true }
	w, dir := durableWorld(t, manual)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "acked")
	mustSend(t, alice, bob, "not acked")
	w.deliver()
	msgs := w.messages(bob)
	if len(msgs) != 2 {
		t.Fatalf("bob got %d", len(msgs))
	}
	if err := w.eng.Ack(msgs[0]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the ack is committed asynchronously
	w.restart(func(o *ratchetd.Options) { o.Store, o.Dir, o.ManualAck = nil, dir, true })
	w.settle()
	again := w.messages(bob)[2:]
	if len(again) != 1 || string(again[0].Payload) != "not acked" || string(again[0].ID) != string(msgs[1].ID) {
		t.Fatalf("redelivered %+v, want only %q with id %x", again, "not acked", msgs[1].ID)
	}
	if w.eng.Stats().Redelivered != 1 {
		t.Fatalf("redelivered counter %d", w.eng.Stats().Redelivered)
	}
}

// failingTransport refuses to publish while down is set, as a network that
// is gone.
type failingTransport struct {
	transport.Transport
	down atomic.Bool
}

var errDown = errors.New("network down")

func (f *failingTransport) Publish(env *messages.Envelope) error {
	if f.down.Load() {
		return errDown
	}
	return f.Transport.Publish(env)
}

// Rule 3 and 1: a send whose envelopes are in the outbox is published after
// a restart, with the same ciphertexts; no state is reused.
func TestDurableOutbox(t *testing.T) {
	w, dir := durableWorld(t, nil)
	ft := &failingTransport{Transport: w.tap}
	w.restart(func(o *ratchetd.Options) { o.Store, o.Dir, o.Transport = nil, dir, ft })
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "before")
	w.deliver()
	ft.down.Store(true)
	// Accepted, and said to be queued: an error would invite the
	// application to send it again, and the peer would get it twice.
	if rep, err := alice.Send(bob.Identity(), []byte("while down")); err != nil || rep.Queued != 1 {
		t.Fatalf("send with the network down: %+v, %v; want it queued, no error", rep, err)
	}
	ft.down.Store(false)
	w.restart(func(o *ratchetd.Options) { o.Store, o.Dir, o.Transport = nil, dir, ft })
	alice, bob = w.reload(alice), w.reload(bob)
	for deadline := time.Now().Add(2 * time.Second); w.eng.Stats().OutboxResent == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if w.eng.Stats().OutboxResent != 1 {
		t.Fatalf("outbox resent %d, want 1", w.eng.Stats().OutboxResent)
	}
	mustSend(t, alice, bob, "after")
	w.deliver()
	if got := w.received(bob); !slices.Equal(got, []string{"before", "while down", "after"}) {
		t.Fatalf("bob got %q", got)
	}
}

// Rule 5: idle sessions passivate and reactivate from the store.
func TestPassivation(t *testing.T) {
	w, _ := durableWorld(t, func(o *ratchetd.Options) { o.SessionIdleTimeout = 30 * time.Millisecond })
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	for i := range 3 {
		mustSend(t, alice, bob, "ping")
		w.deliver()
		mustSend(t, bob, alice, "pong")
		w.deliver()
		deadline := time.Now().Add(3 * time.Second)
		for w.eng.Stats().SessionsActive != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if st := w.eng.Stats(); st.SessionsActive != 0 || st.Passivations == 0 {
			t.Fatalf("round %d: %d sessions still active, %d passivations", i, st.SessionsActive, st.Passivations)
		}
	}
	if got := w.received(bob); len(got) != 3 {
		t.Fatalf("bob got %q", got)
	}
	if got := w.received(alice); len(got) != 3 {
		t.Fatalf("alice got %q", got)
	}
}

// Close lets the Handler finish the messages already given to it and
// acknowledges them as it returns (Options.ManualAck off): none of them is
// delivered again after a restart. (Close used to stop the engine first;
// the acknowledgements the Handler made afterwards were refused, and those
// messages came back.)
func TestCloseAcksWhatTheHandlerFinishes(t *testing.T) {
	var handled atomic.Int64
	slow := func(o *ratchetd.Options) {
		o.Handler = func(ratchetd.Message) {
			time.Sleep(2 * time.Millisecond)
			handled.Add(1)
		}
	}
	w := newWorld(t, transport.Faults{}, slow)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	const n = 40
	for i := range n {
		mustSend(t, alice, bob, fmt.Sprint("m", i))
	}
	w.mem.DeliverAll(0) // all decrypted and queued to the slow Handler
	if err := w.eng.Close(); err != nil {
		t.Fatal(err)
	}
	if got := handled.Load(); got != n {
		t.Fatalf("the Handler finished %d of %d messages before Close returned", got, n)
	}
	handled.Store(0)
	w.open(slow)
	time.Sleep(100 * time.Millisecond) // redeliveries run at start
	if st := w.eng.Stats(); st.Redelivered != 0 || handled.Load() != 0 {
		t.Fatalf("%d messages delivered again after a clean Close (%d redelivered)", handled.Load(), st.Redelivered)
	}
}
