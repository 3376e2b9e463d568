package node_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/transport"
	"github.com/ratchetd/ratchetd/transport/node"
)

// TestWatchSubscribers: a node tells its watchers of a topic a peer node
// announces for the first time, and of every topic of a peer node that
// announces itself again after it was silent (restarted); a live peer's
// steady Hellos tell nothing, and a cancelled watcher hears nothing more.
func TestWatchSubscribers(t *testing.T) {
	const hello = 50 * time.Millisecond
	a, err := node.Start(node.Options{Listen: "127.0.0.1:0", HelloInterval: hello})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var mu sync.Mutex
	heard := map[string]int{}
	count := func(topic string) int {
		mu.Lock()
		defer mu.Unlock()
		return heard[topic]
	}
	cancel := a.WatchSubscribers(func(topics []string) {
		mu.Lock()
		for _, t := range topics {
			heard[t]++
		}
		mu.Unlock()
	})
	nop := func(transport.Delivery) error { return nil }
	startB := func(addr string, topics ...string) *node.Node {
		b, err := node.Start(node.Options{Listen: addr, Peers: []string{a.Address()}, HelloInterval: hello})
		if err != nil {
			t.Fatal(err)
		}
		for _, topic := range topics {
			if _, err := b.Subscribe(topic, nop); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	b := startB("127.0.0.1:0", "t1")
	addr := b.Address()
	waitFor(t, "a to hear of t1", func() bool { return count("t1") >= 1 })
	time.Sleep(20 * hello) // forty Hellos from a live peer
	if n := count("t1"); n != 1 {
		t.Fatalf("a live peer's Hellos reported t1 %d times; want once", n)
	}
	if _, err := b.Subscribe("t2", nop); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to hear of t2", func() bool { return count("t2") == 1 })

	// b restarts on the same address after more than three Hello
	// intervals of silence: a hears both its topics again, though it knew
	// them, whichever of b's Hello and Subscribed messages comes first.
	b.Close()
	time.Sleep(8 * hello)
	b = startB(addr, "t1", "t2")
	waitFor(t, "a to hear of t1 and t2 from the restarted b", func() bool { return count("t1") >= 2 && count("t2") >= 2 })
	// (A Hello that b built before its second Subscribe may arrive after
	// it, and the topic is news once more: a spare wake-up, no harm.)
	time.Sleep(4 * hello)
	settled := fmt.Sprint(count("t1"), count("t2"))
	time.Sleep(20 * hello)
	if got := fmt.Sprint(count("t1"), count("t2")); got != settled {
		t.Fatalf("the restarted b's steady Hellos reported its topics again: heard %s times, then %s", settled, got)
	}
	cancel()
	if _, err := b.Subscribe("t3", nop); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to learn t3", func() bool { return a.Stats().PeerTopics[addr] == 3 })
	b.Close()
	if n := count("t3"); n != 0 {
		t.Fatalf("a cancelled watcher heard t3 %d times", n)
	}

}
