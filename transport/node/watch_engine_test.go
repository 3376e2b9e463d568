package node_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
	"github.com/ratchetd/ratchetd/transport/node"
)

// unwatched is a node without its transport.Watcher side (the control).
type unwatched struct{ n *node.Node }

func (u unwatched) Publish(env *messages.Envelope) error { return u.n.Publish(env) }
func (u unwatched) Subscribe(topic string, h transport.Handler) (func(), error) {
	return u.n.Subscribe(topic, h)
}
func (u unwatched) Close() error { return u.n.Close() }
func (u unwatched) PublishConfirm(env *messages.Envelope, done func(error)) {
	u.n.PublishConfirm(env, done)
}

// TestPeerNodeBackEndsBackoff: alice's engine runs on a frozen clock, so
// once her sends to bob failed (his node hosted nothing) her lane to him
// never ends its wait by itself, and bob never writes to her. When bob's
// node is back on its address, hers hears his topics again and her
// backlog goes at once. The same run with the node's Watcher hidden delivers
// nothing: the news is what ends the wait. At the end alice's clock moves
// an hour, and every send arrives (in both runs).
func TestPeerNodeBackEndsBackoff(t *testing.T) {
	for _, watch := range []bool{true, false} {
		t.Run(fmt.Sprint("watch=", watch), func(t *testing.T) { peerNodeBack(t, watch) })
	}
}

func peerNodeBack(t *testing.T, watch bool) {
	an, err := node.Start(node.Options{Listen: "127.0.0.1:0", HelloInterval: 100 * time.Millisecond, DeliverTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer an.Close()
	var tr transport.Transport = an
	if !watch {
		tr = unwatched{an}
	}
	// now is alice's clock: frozen until the end, when it jumps an hour.
	var now atomic.Pointer[time.Time]
	frozen := time.Now()
	now.Store(&frozen)
	aEng, err := ratchetd.Open(ratchetd.Options{Store: persistence.NewMemory(), Transport: tr, Handler: func(ratchetd.Message) {},
		Clock: func() time.Time { return *now.Load() }, OutboxRetryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer aEng.Close()
	a := &host{t: t, node: an, eng: aEng, addr: an.Address()}
	b := startHost(t, "127.0.0.1:0", nil, a.addr)
	alice, bob := introduced(t, a, b)
	// A first send before the nodes know each other's topics would fail,
	// and wait on the frozen clock too.
	waitFor(t, "the nodes to learn each other's topics", func() bool {
		return an.Stats().PeerTopics[b.addr] >= 2 && b.node.Stats().PeerTopics[a.addr] >= 2
	})
	if _, err := alice.Send(bob.Identity(), []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to receive", func() bool { return len(b.received()) == 1 })

	// Bob's node is replaced by one that hosts nothing: alice's node learns
	// that no topic of bob's has a subscriber, and each publish fails at
	// once, for good (a node that is only down may still get an envelope
	// its sender gave up on, from the remote layer's queue, once it is
	// back).
	b.down()
	stub, err := node.Start(node.Options{Listen: b.addr, Peers: []string{a.addr}, HelloInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's node to learn that bob's topics are gone", func() bool { return an.Stats().PeerTopics[b.addr] == 0 })
	const n = 5
	for i := range n {
		if _, err := alice.Send(bob.Identity(), fmt.Appendf(nil, "while down %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the lane fails, and waits on the frozen clock
	if out, _, _ := aEng.Pending(); out != n {
		t.Fatalf("alice's outbox holds %d, want %d", out, n)
	}
	stub.Close()
	start := time.Now()
	b.up()
	defer b.down()
	// The news ends the lane's wait: its probe goes, and once bob's node
	// confirms it the rest follow. Under a loaded machine a send after the
	// probe can still fail (a delivery timeout, or the remote layer
	// dropping what it queued on the connection to the stub that just
	// went): the lane then waits again on the frozen clock. That is a
	// second wait, not this test's, so the news is judged by the probe.
	deadline := start.Add(5 * time.Second)
	if !watch {
		deadline = start.Add(1500 * time.Millisecond) // fifteen Hellos, thirty passes
	}
	for len(b.received()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for end := time.Now().Add(time.Second); watch && len(b.received()) < n+1 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	got := len(b.received()) - 1
	t.Logf("watch %v: bob has %d of %d, %v after his node came back", watch, got, n, time.Since(start).Round(time.Millisecond))
	switch {
	case watch && got == 0:
		t.Fatalf("bob got nothing within 5 s of his node's return")
	case !watch && got != 0:
		t.Fatalf("without the Watcher bob got %d: something other than the news ended the wait, and this test shows nothing", got)
	}
	// The clock moves on: whatever still waits goes, and nothing was lost.
	later := frozen.Add(time.Hour)
	now.Store(&later)
	waitFor(t, "every send to reach bob once alice's clock moved", func() bool { return len(b.received()) >= n+1 })
	if got := len(b.received()); got != n+1 {
		t.Fatalf("bob has %d messages, want %d", got, n+1)
	}
}
