package ratchetd_test

import (
	"bytes"
	"fmt"
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

// Tests of Options.SendReserve: a session commits its sending chain stepped
// ahead of use, and sends the keys below that without a commit.

// sessionCommits counts the commits that write under one prefix (a
// session's records).
type sessionCommits struct {
	persistence.Store
	mu     sync.Mutex
	prefix []byte
	n      int
}

func (c *sessionCommits) Commit(ws []persistence.Write) error {
	c.mu.Lock()
	for _, w := range ws {
		if c.prefix != nil && !w.Delete && bytes.HasPrefix(w.Key, c.prefix) {
			c.n++
			break
		}
	}
	c.mu.Unlock()
	return c.Store.Commit(ws)
}

func (c *sessionCommits) count(prefix []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prefix != nil {
		c.prefix, c.n = prefix, 0
	}
	return c.n
}

// headers are the (ratchet key, n) of alice's entries published since mark.
func headers(w *world, mark int) [][2]string {
	var out [][2]string
	for _, pm := range w.tap.since(mark) {
		for _, e := range pm.EncryptedMessage {
			h := e.GetDrHeader()
			out = append(out, [2]string{fmt.Sprintf("%x", h.GetKey()), fmt.Sprint(h.GetN())})
		}
	}
	return out
}

// TestReserveCommitsOncePerRun: a run of 100 sends commits the sender's
// session a handful of times (each commit reserves as many keys as the
// chain has sent), against once per send without reservation; the peer
// decrypts all of them, in order.
func TestReserveCommitsOncePerRun(t *testing.T) {
	for _, tc := range []struct {
		reserve  int
		min, max int
	}{
		{0, 5, 8},      // default 64: the commits at n = 0, 2, 6, 14, 30, 62
		{-1, 100, 100}, // none: every send commits
		{4, 20, 25},    // each commit covers its message and 4 more
	} {
		t.Run(fmt.Sprint(tc.reserve), func(t *testing.T) {
			cs := &sessionCommits{Store: persistence.NewMemory()}
			w := newWorld(t, transport.Faults{}, func(o *ratchetd.Options) {
				o.Store = cs
				o.SendReserve = tc.reserve
			})
			alice, bob := w.account(), w.account()
			introduce(t, alice, bob)
			cs.count(persistence.SessionPrefix(alice.InstallationID(), bob.Identity().Bytes()))
			var want []string
			for i := range 100 {
				want = append(want, fmt.Sprint("m", i))
				mustSend(t, alice, bob, want[i])
			}
			n := cs.count(nil)
			w.deliver()
			if got := w.received(bob); !slices.Equal(got, want) {
				t.Fatalf("bob got %d messages: %q", len(got), got)
			}
			t.Logf("SendReserve %d: 100 sends, %d commits of alice's session", tc.reserve, n)
			if n < tc.min || n > tc.max {
				t.Fatalf("%d commits of the sender's session for 100 sends, want %d to %d", n, tc.min, tc.max)
			}
		})
	}
}

// TestReservedKeysAfterCrash: the store is taken as it is in the middle of
// a run of sends, as a kill -9 would leave it (no stop, no rewind), and an
// engine is opened on it. The sends after the crash resume past the keys
// reserved: no (ratchet key, n) is used twice, the keys left unused are a
// gap the peer skips, and every message is decrypted.
func TestReservedKeysAfterCrash(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mark := w.tap.mark()
	var want []string
	for i := range 9 { // commits at n = 0, 2, 6: n = 7 and 8 are sent on the third
		want = append(want, fmt.Sprint("before ", i))
		mustSend(t, alice, bob, want[i])
	}

	// The crash: a copy of the store now, the old engine abandoned.
	crashed := persistence.NewMemory()
	var ws []persistence.Write
	if err := w.store.Scan(nil, func(k, v []byte) error {
		ws = append(ws, persistence.Write{Key: bytes.Clone(k), Value: bytes.Clone(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := crashed.Commit(ws); err != nil {
		t.Fatal(err)
	}
	w.eng.Close()
	w.store = crashed
	w.open(nil)
	alice, bob = w.reload(alice), w.reload(bob)
	// What the network held for bob (the old engine's subscription is
	// gone with it) reaches the new one.
	w.tap.mu.Lock()
	held := slices.Clone(w.tap.sent[mark:])
	w.tap.mu.Unlock()
	for _, env := range held {
		if err := w.mem.Publish(env); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		want = append(want, fmt.Sprint("after ", i))
		mustSend(t, alice, bob, want[len(want)-1])
	}

	hs := headers(w, mark)
	seen := map[[2]string]bool{}
	for _, h := range hs {
		if seen[h] {
			t.Fatalf("key (%s, n %s) used twice: %v", h[0][:8], h[1], hs)
		}
		seen[h] = true
	}
	if len(hs) != 12 || hs[9][1] != "14" {
		t.Fatalf("the first send after the crash is n %s, want 14 (the chain was committed stepped to 14 at n = 6): %v", hs[9][1], hs)
	}
	w.deliver()
	if got := w.received(bob); !slices.Equal(got, want) {
		t.Fatalf("bob got %q, want %q", got, want)
	}
}

// TestReserveGivenBackOnPassivation: a session that passivates with
// reserved keys unused stores its exact chain, so that its next message
// leaves no gap for the peer to skip.
func TestReserveGivenBackOnPassivation(t *testing.T) {
	w := newWorld(t, transport.Faults{}, func(o *ratchetd.Options) { o.SessionIdleTimeout = 100 * time.Millisecond })
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mark := w.tap.mark()
	for i := range 4 { // commits at n = 0 (to 2) and n = 2 (to 6)
		mustSend(t, alice, bob, fmt.Sprint("m", i))
	}
	prefix := persistence.SessionPrefix(alice.InstallationID(), bob.Identity().Bytes())
	sendN := func() uint32 {
		var n uint32
		found := false
		w.store.Scan(prefix, func(_, v []byte) error {
			var rec messages.SessionRecord
			if proto.Unmarshal(v, &rec) == nil && rec.State != nil {
				n, found = rec.State.SendN, true
			}
			return nil
		})
		if !found {
			t.Fatal("no session record of alice's")
		}
		return n
	}
	if n := sendN(); n != 6 {
		t.Fatalf("stored send N %d while the session runs, want 6 (reserved)", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sendN() != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("stored send N %d after the session passivated, want 4 (the keys used)", sendN())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := w.eng.Stats(); st.Passivations == 0 {
		t.Fatalf("the session did not passivate: %+v", st)
	}
	mustSend(t, alice, bob, "m4")
	hs := headers(w, mark)
	if len(hs) != 5 || hs[4][1] != "4" {
		t.Fatalf("headers %v: the send after the passivation should be n 4", hs)
	}
	w.deliver()
	if got := w.received(bob); len(got) != 5 {
		t.Fatalf("bob got %q", got)
	}
}

// TestReservedSendsAndStoreFailures: while the store fails, a send whose key
// a durable reservation covers still goes (nothing needs committing), and
// the first one past it fails with no ciphertext out; the conversation then
// goes on with no key used twice.
func TestReservedSendsAndStoreFailures(t *testing.T) {
	fs := &faultyStore{Store: persistence.NewMemory()}
	w := newWorld(t, transport.Faults{}, func(o *ratchetd.Options) {
		o.Store = fs
		o.RequestTimeout = 300 * time.Millisecond
	})
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mark := w.tap.mark()
	mustSend(t, alice, bob, "one") // n 0, committed stepped to 2

	fs.arm(persistence.SessionPrefix(alice.InstallationID(), bob.Identity().Bytes()), false)
	mustSend(t, alice, bob, "covered") // n 1: reserved, no commit
	if fs.hits != 0 {
		t.Fatalf("a reserved send committed (%d faults hit)", fs.hits)
	}
	before := w.tap.mark()
	if _, err := alice.Send(bob.Identity(), []byte("not durable")); err == nil { // n 2: needs a commit
		t.Fatal("a send past the reservation succeeded although its commit failed")
	}
	if n := len(w.tap.since(before)); n != 0 {
		t.Fatalf("%d ciphertexts left without a durable reservation", n)
	}
	if fs.hits != 1 {
		t.Fatalf("%d faults hit, want 1", fs.hits)
	}
	mustSend(t, alice, bob, "after") // the store works again
	w.deliver()
	if got := w.received(bob); !slices.Equal(got, []string{"one", "covered", "after"}) {
		t.Fatalf("bob got %q", got)
	}
	hs := headers(w, mark)
	seen := map[[2]string]bool{}
	for _, h := range hs {
		if seen[h] {
			t.Fatalf("key n %s used twice: %v", h[1], hs)
		}
		seen[h] = true
	}
}
