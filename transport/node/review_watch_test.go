package node_test

import (
	"crypto/rand"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/transport"
	"github.com/ratchetd/ratchetd/transport/node"
)

// TestReviewPartitionMateTakesAbsentRecipientsBacklog: a node confirms an
// envelope once every local subscriber of its topic took it, and an
// Installation takes an envelope for another identity on its partitioned
// topic as processed ("another identity on the same partition topic").
// Partitioned topics are shared (5000 of them, status-compat.md §12): when
// the recipient's node is not among the subscribers the sender knows, a
// node hosting a partition-mate confirms the envelope for it, and the
// sender's outbox deletes it. Here y's node is down when alice's node
// restarts; alice's node then learns y's partition topic only from b's
// node, which hosts x (same partition as y). alice's backlog to y is
// "confirmed" by x and deleted; y, back on its address, never gets it.
//
// (The Watcher makes the window wider, not the bug: news of x's topic
// wakes alice's lane to y, the "one spare probe" f1c7791 counts on failing,
// and a confirmed probe releases the whole backlog behind it.)
func TestReviewPartitionMateTakesAbsentRecipientsBacklog(t *testing.T) {
	a := startHost(t, "127.0.0.1:0", nil)
	defer func() { a.down() }()
	b := startHost(t, "127.0.0.1:0", nil, a.addr)
	defer b.down()
	yh := startHost(t, "127.0.0.1:0", nil, a.addr)
	alice, yann := introduced(t, a, yh)

	// x, hosted by b's node, shares y's partitioned topic.
	topic := transport.PartitionedTopic(yann.Identity())
	var xk keys.KeyPair
	for i := 0; ; i++ {
		kp, err := keys.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if kp.Public != yann.Identity() && transport.PartitionedTopic(kp.Public) == topic {
			xk = kp
			break
		}
		if i > 200000 {
			t.Fatal("no partition-mate found")
		}
	}
	if _, err := b.eng.AddInstallation(xk.Private); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's node to learn b's and y's topics", func() bool {
		st := a.node.Stats()
		return st.PeerTopics[b.addr] >= 2 && st.PeerTopics[yh.addr] >= 2
	})
	if _, err := alice.Send(yann.Identity(), []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "y to receive the first message", func() bool { return len(yh.received()) == 1 })

	// y's node goes down; alice's sends to y wait in her outbox (y's node
	// is still among the subscribers her node knows, and does not answer).
	yh.down()
	const n = 3
	for i := range n {
		if _, err := alice.Send(yann.Identity(), fmt.Appendf(nil, "while y is down %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second) // past the node's DeliverTimeout (2 s)
	if out, _, _ := a.eng.Pending(); out != n {
		t.Fatalf("alice's outbox holds %d with y's node down, want %d", out, n)
	}

	// alice's process restarts while y's node is still down.
	a.down()
	a.up()
	drained := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, _, _ := a.eng.Pending(); out == 0 {
			drained = true
			break
		}
	}
	bDelivered := b.node.Stats().Delivered

	// y is back on its address; what alice's outbox still holds reaches it.
	yh.up()
	defer yh.down()
	for deadline := time.Now().Add(8 * time.Second); len(yh.received()) < n+1 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	got := len(yh.received()) - 1
	out, _, _ := a.eng.Pending()
	t.Logf("alice's outbox drained while y was down: %v (b's node delivered %d envelopes to its subscribers); y received %d of %d; alice's outbox now %d",
		drained, bDelivered, got, n, out)
	if got < n {
		t.Fatalf("y received %d of the %d sends made while its node was down, and alice's outbox holds %d: b's node confirmed them for x, y's partition-mate (drained while y was down: %v)",
			got, n, out, drained)
	}
}

// TestReviewQuickRestartIsNotNews: the node takes a peer's return for news
// only after silentHellos (3) HelloIntervals of silence. A peer node that
// restarts faster than that (a crash and a supervisor's restart, or a hung
// node killed by a liveness check and started again: 3 s at the default
// HelloInterval) and whose first Hello already carries its topics is not
// news, so the Watcher never reports it. Yet that is when a sender's lanes
// to it have been backing off longest (a hung node keeps greeting, so its
// hang was not news either): they wait up to MaxOutboxBackoff (1 min). A
// Hello that carried the node's incarnation (a random id per Start) would
// tell a restart from a live peer whatever its length.
func TestReviewQuickRestartIsNotNews(t *testing.T) {
	a, err := node.Start(node.Options{Listen: "127.0.0.1:0"}) // default HelloInterval (1 s)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var mu sync.Mutex
	heard := 0
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return heard
	}
	a.WatchSubscribers(func(topics []string) {
		mu.Lock()
		for _, tp := range topics {
			if tp == "t1" {
				heard++
			}
		}
		mu.Unlock()
	})
	nop := func(transport.Delivery) error { return nil }
	startB := func(addr string) *node.Node {
		t.Helper()
		b, err := node.Start(node.Options{Listen: addr, Peers: []string{a.Address()}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Subscribe("t1", nop); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := startB("127.0.0.1:0")
	addr := b.Address()
	waitFor(t, "a to hear of t1", func() bool { return count() == 1 })
	time.Sleep(2 * time.Second) // a live peer for a while

	// b's node restarts on its address.
	down := time.Now()
	b.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stays in use: %v", addr, err)
		}
	}
	time.Sleep(time.Until(down.Add(1500 * time.Millisecond))) // a process restart: 1.5 s down
	b = startB(addr)
	defer b.Close()
	back := time.Since(down)
	for deadline := time.Now().Add(5 * time.Second); count() < 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("b's node was down %v; a's watchers heard t1 %d times", back.Round(time.Millisecond), count())
	if count() < 2 {
		t.Fatalf("b's node restarted (down %v) and announces t1 again, but a's watchers never heard of it: the restart is news only after 3 s of silence",
			back.Round(time.Millisecond))
	}
}
