package ratchetd_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// tap records every envelope published through a transport.
type tap struct {
	transport.Transport
	mu   sync.Mutex
	sent []*messages.Envelope
}

func (t *tap) Publish(env *messages.Envelope) error {
	t.mu.Lock()
	t.sent = append(t.sent, proto.Clone(env).(*messages.Envelope))
	t.mu.Unlock()
	return t.Transport.Publish(env)
}

// since returns the encrypted ProtocolMessages published since mark.
func (t *tap) since(mark int) []*messages.ProtocolMessage {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*messages.ProtocolMessage
	for _, e := range t.sent[mark:] {
		var pm messages.ProtocolMessage
		if proto.Unmarshal(e.Payload, &pm) == nil && len(pm.EncryptedMessage) > 0 {
			out = append(out, &pm)
		}
	}
	return out
}

func (t *tap) mark() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sent)
}

// world is one engine on a manual in-memory transport: a test decides when
// envelopes are delivered, and each delivery is processed before it returns.
type world struct {
	t     testing.TB
	mem   *transport.Memory
	tap   *tap
	store *persistence.Memory
	eng   *ratchetd.Engine
	clock *fakeClock

	mu    sync.Mutex
	inbox map[string][]ratchetd.Message // by recipient installation
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newWorld(t testing.TB, faults transport.Faults, tweak func(*ratchetd.Options)) *world {
	w := &world{
		t:     t,
		mem:   transport.NewMemory(transport.MemoryOptions{Manual: true, Faults: faults}),
		store: persistence.NewMemory(),
		clock: &fakeClock{now: time.Unix(1_700_000_000, 0)},
		inbox: map[string][]ratchetd.Message{},
	}
	w.tap = &tap{Transport: w.mem}
	w.open(tweak)
	t.Cleanup(func() {
		w.eng.Close()
		w.mem.Close()
	})
	return w
}

func (w *world) open(tweak func(*ratchetd.Options)) {
	opts := ratchetd.Options{
		Store: w.store, Transport: w.tap, Clock: w.clock.Now,
		Handler: func(m ratchetd.Message) {
			w.mu.Lock()
			w.inbox[m.RecipientInstallation] = append(w.inbox[m.RecipientInstallation], m)
			w.mu.Unlock()
		},
	}
	if tweak != nil {
		tweak(&opts)
	}
	eng, err := ratchetd.Open(opts)
	if err != nil {
		w.t.Fatal(err)
	}
	w.eng = eng
}

// restart closes the engine and opens a new one on the same store.
func (w *world) restart(tweak func(*ratchetd.Options)) {
	w.eng.Close()
	w.open(tweak)
}

// restartWith closes the engine, changes the store (what happens to it
// while no engine runs: a record lost), and opens a new one on it. A
// change made under a running engine can be undone by it: a session
// writes its record when it stops.
func (w *world) restartWith(change func(), tweak func(*ratchetd.Options)) {
	w.eng.Close()
	change()
	w.open(tweak)
}

func (w *world) account() *ratchetd.Account {
	a, err := w.eng.CreateAccount()
	if err != nil {
		w.t.Fatal(err)
	}
	return a
}

// deliver delivers every held envelope, and those they cause, and waits for
// the handler to have seen the resulting messages.
func (w *world) deliver() int {
	n := w.mem.DeliverAll(0)
	w.settle()
	return n
}

// settle waits until the application handler has drained what the engine
// delivered (the handler runs on its own goroutine).
func (w *world) settle() {
	deadline := time.Now().Add(5 * time.Second)
	last := -1
	stable := 0
	for time.Now().Before(deadline) {
		w.mu.Lock()
		n := 0
		for _, l := range w.inbox {
			n += len(l)
		}
		w.mu.Unlock()
		if n == last {
			stable++
			if stable > 3 {
				return
			}
		} else {
			stable, last = 0, n
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (w *world) received(a *ratchetd.Account) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range w.inbox[a.InstallationID()] {
		out = append(out, string(m.Payload))
	}
	return out
}

func (w *world) messages(a *ratchetd.Account) []ratchetd.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ratchetd.Message(nil), w.inbox[a.InstallationID()]...)
}

func mustSend(t testing.TB, from *ratchetd.Account, to *ratchetd.Account, text string) ratchetd.SendReport {
	t.Helper()
	r, err := from.Send(to.Identity(), []byte(text))
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return r
}

func introduce(t testing.TB, a, b *ratchetd.Account) {
	t.Helper()
	s, err := b.ExportBundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ImportBundle(s); err != nil {
		t.Fatal(err)
	}
}

// reload returns the account of the current engine (after a restart).
func (w *world) reload(a *ratchetd.Account) *ratchetd.Account {
	b, err := w.eng.Account(a.InstallationID())
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// converse starts a conversation: bob's bundle to alice, "one" from alice,
// "two" from bob, both delivered.
func converse(t testing.TB, w *world, alice, bob *ratchetd.Account) {
	t.Helper()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "one")
	w.deliver()
	mustSend(t, bob, alice, "two")
	w.deliver()
}

// resumed delivers "three" (alice to bob) and "four" (bob to alice), sent
// after a restart of a conversation begun with converse, and checks that
// they arrived on the old sessions: no X3DH ran.
func resumed(t testing.TB, w *world, alice, bob *ratchetd.Account, after string) {
	t.Helper()
	w.deliver()
	if st := w.eng.Stats(); st.X3DHActive+st.X3DHPassive != 0 {
		t.Fatalf("X3DH ran after %s: %+v", after, st)
	}
	if got := w.received(bob); !slices.Equal(got, []string{"one", "three"}) {
		t.Fatalf("bob got %q", got)
	}
	if got := w.received(alice); !slices.Equal(got, []string{"two", "four"}) {
		t.Fatalf("alice got %q", got)
	}
}
