package node_test

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/transport"
	"github.com/ratchetd/ratchetd/transport/node"
)

// TestConfirmNeedsTheRecipient: on a shared topic, a node whose subscribers
// answer ErrNotRecipient (partition-mates of the recipient) accepts an
// envelope but does not confirm it for its recipient: the sender's
// PublishConfirm fails with ErrNoRecipient, and the sender keeps it. Once
// a node that hosts the recipient takes it too, it is confirmed. A public
// envelope (no recipient) needs no recipient's word.
func TestConfirmNeedsTheRecipient(t *testing.T) {
	opts := func(peers ...string) node.Options {
		return node.Options{Listen: "127.0.0.1:0", Peers: peers, HelloInterval: 50 * time.Millisecond, DeliverTimeout: 2 * time.Second}
	}
	a, err := node.Start(opts())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mate, err := node.Start(opts(a.Address()))
	if err != nil {
		t.Fatal(err)
	}
	defer mate.Close()
	const topic = "partition"
	if _, err := mate.Subscribe(topic, func(transport.Delivery) error { return transport.ErrNotRecipient }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to learn the mate's topic", func() bool { return a.Stats().PeerTopics[mate.Address()] == 1 })

	sender, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	recipient, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := transport.Seal(sender.Private, topic, &recipient.Public, []byte("for the recipient"))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-confirmAsync(a, direct); !errors.Is(err, node.ErrNoRecipient) || !errors.Is(err, node.ErrNotDelivered) {
		t.Fatalf("only a partition-mate took it: PublishConfirm = %v; want ErrNoRecipient (not delivered)", err)
	}
	public, err := transport.Seal(sender.Private, topic, nil, []byte("public"))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-confirmAsync(a, public); err != nil {
		t.Fatalf("a public envelope accepted by every subscriber: PublishConfirm = %v", err)
	}

	// The recipient's node appears and takes it.
	home, err := node.Start(opts(a.Address()))
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	got := make(chan struct{}, 1)
	if _, err := home.Subscribe(topic, func(transport.Delivery) error { got <- struct{}{}; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to learn the recipient's node", func() bool { return a.Stats().PeerTopics[home.Address()] == 1 })
	if err := <-confirmAsync(a, direct); err != nil {
		t.Fatalf("the recipient's node took it: PublishConfirm = %v", err)
	}
	select {
	case <-got:
	default:
		t.Fatal("confirmed, but the recipient's subscriber never ran")
	}
}

// TestGonePeerIsNotWaitedFor: a node waits for every subscribing node it
// knows, so a partition-mate's node that went away held up every envelope
// on its topics, for good (nodes never forgot a peer). One silent for
// PeerExpiry is no longer waited for.
func TestGonePeerIsNotWaitedFor(t *testing.T) {
	opts := func(peers ...string) node.Options {
		return node.Options{Listen: "127.0.0.1:0", Peers: peers, HelloInterval: 50 * time.Millisecond,
			DeliverTimeout: 500 * time.Millisecond, PeerExpiry: 3 * time.Second}
	}
	a, err := node.Start(opts())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mate, err := node.Start(opts(a.Address()))
	if err != nil {
		t.Fatal(err)
	}
	home, err := node.Start(opts(a.Address()))
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	const topic = "partition"
	if _, err := mate.Subscribe(topic, func(transport.Delivery) error { return transport.ErrNotRecipient }); err != nil {
		t.Fatal(err)
	}
	if _, err := home.Subscribe(topic, func(transport.Delivery) error { return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to learn both nodes", func() bool {
		st := a.Stats()
		return st.PeerTopics[mate.Address()] == 1 && st.PeerTopics[home.Address()] == 1
	})
	sender, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	recipient, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	env, err := transport.Seal(sender.Private, topic, &recipient.Public, []byte("for the recipient"))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-confirmAsync(a, env); err != nil {
		t.Fatalf("both nodes up: %v", err)
	}
	closed := time.Now()
	mate.Close() // up to 1.6 s: DeliverTimeout, then the remote layer's shutdown
	if err := <-confirmAsync(a, env); err == nil {
		t.Fatalf("the mate's node went away %v ago, and was not waited for: want an error until PeerExpiry", time.Since(closed).Round(time.Millisecond))
	}
	time.Sleep(time.Until(closed.Add(3500 * time.Millisecond)))
	if err := <-confirmAsync(a, env); err != nil {
		t.Fatalf("the mate's node is silent past PeerExpiry, and still waited for: %v", err)
	}
}
