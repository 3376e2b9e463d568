package node_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
	"github.com/ratchetd/ratchetd/transport/node"
)

func reviewSeal(t *testing.T, topic, payload string) *messages.Envelope {
	t.Helper()
	kp, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	env, err := transport.Seal(kp.Private, topic, nil, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func confirmAsync(n *node.Node, env *messages.Envelope) <-chan error {
	done := make(chan error, 1)
	n.PublishConfirm(env, func(err error) { done <- err })
	return done
}

// TestReviewCancelledSubscriptionAcksUnprocessed: an envelope queued for a
// subscription that is cancelled before its handler ran (Engine.Close and
// StopInstallation cancel every subscription; serve's SIGTERM path does
// that) is acknowledged as delivered: the sender deletes it from its outbox
// although no installation ever committed it.
func TestReviewCancelledSubscriptionAcksUnprocessed(t *testing.T) {
	b, err := node.Start(node.Options{Listen: "127.0.0.1:0", HelloInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	var mu sync.Mutex
	var handled []string
	cancel, err := b.Subscribe("t", func(d transport.Delivery) error {
		entered <- struct{}{}
		<-release
		mu.Lock()
		handled = append(handled, string(d.Payload))
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.Start(node.Options{Listen: "127.0.0.1:0", Peers: []string{b.Address()}, HelloInterval: 100 * time.Millisecond, DeliverTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitFor(t, "a to learn b's topic", func() bool { return a.Stats().PeerTopics[b.Address()] == 1 })

	first := confirmAsync(a, reviewSeal(t, "t", "m1"))
	<-entered // m1 is in the handler
	second := confirmAsync(a, reviewSeal(t, "t", "m2"))
	waitFor(t, "m2 to be queued at b", func() bool { return b.Stats().Received == 2 })
	cancel() // what Engine.Close does before it stops the installations
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("m1 (processed): %v", err)
	}
	err = <-second
	mu.Lock()
	defer mu.Unlock()
	if err == nil {
		t.Fatalf("m2 was acknowledged to the sender although no handler processed it (handled %q): the sender's outbox drops it, the message is lost", handled)
	}
}

// TestReviewRestartedNodeAcksBeforeSubscribing: a peer node that restarted
// on the same address and has not subscribed yet (serve starts the node,
// then opens the engine, which subscribes as it loads the installations;
// Engine.Close cancels the subscriptions before the node closes) answers a
// retried envelope with "unknown-topic", Accepted: true. The sender, whose
// view of the peer's topics is from before the restart, takes that as the
// confirmation and deletes the envelope from its outbox: lost.
func TestReviewRestartedNodeAcksBeforeSubscribing(t *testing.T) {
	b1, err := node.Start(node.Options{Listen: "127.0.0.1:0", HelloInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	addr := b1.Address()
	if _, err := b1.Subscribe("t", func(transport.Delivery) error { return nil }); err != nil {
		t.Fatal(err)
	}
	a, err := node.Start(node.Options{Listen: "127.0.0.1:0", Peers: []string{addr}, HelloInterval: time.Hour, DeliverTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitFor(t, "a to learn b's topic", func() bool { return a.Stats().PeerTopics[addr] == 1 })
	b1.Close()

	// b restarts; its engine is still opening (no subscription yet).
	b2, err := node.Start(node.Options{Listen: addr, HelloInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	var got atomic.Int64
	err = confirm(a, reviewSeal(t, "t", "retried from the outbox"))
	// The engine now subscribes.
	if _, err := b2.Subscribe("t", func(transport.Delivery) error { got.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err == nil && got.Load() == 0 {
		t.Fatalf("the envelope was confirmed to the sender (Dropped %v) but never reached a subscriber: lost", b2.Stats().Dropped)
	}
}

// TestReviewFloodCapBypassedBySpoofedFrom: the per-peer cap is keyed on the
// Deliver's From field when the message carries no sender PID (a plain
// Send, not a request). A peer that rotates From gets a fresh budget for
// every envelope: the cap bounds nothing, the subscription queue and the
// inflight map grow without limit.
func TestReviewFloodCapBypassedBySpoofedFrom(t *testing.T) {
	block := make(chan struct{})
	var handled atomic.Int64
	target, err := node.Start(node.Options{Listen: "127.0.0.1:0", MaxInflightPerPeer: 4, HelloInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	defer close(block)
	target.Subscribe("slow", func(transport.Delivery) error { handled.Add(1); <-block; return nil })

	// The attacker: a bare protoactor remote, no ratchetd node.
	sys := actor.NewActorSystem()
	rem := remote.NewRemote(sys, remote.Configure("127.0.0.1", 0))
	rem.Start()
	defer rem.Shutdown(false)
	pid := actor.NewPID(target.Address(), "ratchetd-node")
	const flood = 200
	for i := range flood {
		sys.Root.Send(pid, &messages.Deliver{Envelope: reviewSeal(t, "slow", "flood"), From: fmt.Sprintf("10.0.%d.%d:1", i/256, i%256)})
	}
	waitFor(t, "the target to receive the flood", func() bool { return target.Stats().Received == flood })
	st := target.Stats()
	// Refused as a flood, or (a delivery with no reply address, as these
	// are) before it is looked at.
	if refused := st.Dropped["flood"] + st.Dropped["no-reply-address"]; refused < flood-4 {
		t.Fatalf("one peer has %d envelopes queued (cap 4): only %d refused", flood-int(refused), refused)
	}
}

// failingStore fails every Commit while fail is set.
type failingStore struct {
	persistence.Store
	fail atomic.Bool
}

func (s *failingStore) Commit(w []persistence.Write) error {
	if s.fail.Load() {
		return errors.New("disk full")
	}
	return s.Store.Commit(w)
}

// TestReviewGatewayAcksFailedCommit: the engine's gateway ignores the
// installation's answer (Processed with STORE, TIMEOUT, ... or a request
// timeout) and the transport handler has no way to report a failure, so the
// node acknowledges an envelope whose decryption was never committed. The
// sender deletes it from its outbox; when the receiver's store works again
// the message never comes.
func TestReviewGatewayAcksFailedCommit(t *testing.T) {
	na, err := node.Start(node.Options{Listen: "127.0.0.1:0", HelloInterval: 100 * time.Millisecond, DeliverTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer na.Close()
	nb, err := node.Start(node.Options{Listen: "127.0.0.1:0", Peers: []string{na.Address()}, HelloInterval: 100 * time.Millisecond, DeliverTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	ea, err := ratchetd.Open(ratchetd.Options{Store: persistence.NewMemory(), Transport: na})
	if err != nil {
		t.Fatal(err)
	}
	defer ea.Close()
	bs := &failingStore{Store: persistence.NewMemory()}
	var mu sync.Mutex
	var got []string
	eb, err := ratchetd.Open(ratchetd.Options{Store: bs, Transport: nb, RequestTimeout: 2 * time.Second, Handler: func(m ratchetd.Message) {
		mu.Lock()
		got = append(got, string(m.Payload))
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	alice, err := ea.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	bob, err := eb.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, alice, bob)
	waitFor(t, "the nodes to learn each other's topics", func() bool {
		return na.Stats().PeerTopics[nb.Address()] > 0 && nb.Stats().PeerTopics[na.Address()] > 0
	})
	received := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
	if _, err := alice.Send(bob.Identity(), []byte("one")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to receive one", func() bool { return len(received()) == 1 })

	bs.fail.Store(true) // bob's disk is full for a moment
	if _, err := alice.Send(bob.Identity(), []byte("two")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two to reach bob's node", func() bool { return nb.Stats().Received >= 2 })
	time.Sleep(500 * time.Millisecond)
	bs.fail.Store(false)
	time.Sleep(4500 * time.Millisecond) // two outbox retry intervals (2 s)
	if r := received(); len(r) != 2 {
		t.Fatalf("bob received %q after his store recovered: %q was acknowledged to alice's outbox without being committed (failures %d)", r, "two", eb.Stats().DecryptFailures)
	}
}

// TestReviewCloseStallsOnUnreachablePeer: Node.Close (the last step of
// serve's graceful shutdown) takes about 9 s when a peer in Peers is
// unreachable: the remote layer's graceful shutdown waits on the endpoint
// that keeps failing to connect.
func TestReviewCloseStallsOnUnreachablePeer(t *testing.T) {
	tmp, err := node.Start(node.Options{Listen: "127.0.0.1:0", HelloInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dead := tmp.Address()
	tmp.Close()
	a, err := node.Start(node.Options{Listen: "127.0.0.1:0", Peers: []string{dead}, HelloInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	a.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v with one unreachable peer", d)
	}
	// Close has returned, so the address is free: a node started again on
	// it in the same process must not find its old listener there
	// (protoactor's remote.Start panics on "address already in use"; seen
	// in CI as TestWarmUpWaitsForEveryPeer's restart).
	l, err := net.Listen("tcp", a.Address())
	if err != nil {
		t.Fatalf("address still in use after Close: %v", err)
	}
	l.Close()
}

// TestForgedAnnouncementsAreBounded: Hellos and Subscribed messages with
// addresses and topics of the sender's choosing fill neither the peer
// table (MaxPeers) nor one peer's topics (MaxTopicsPerPeer); the rest are
// dropped and counted, and the node greets no more addresses than the cap.
func TestForgedAnnouncementsAreBounded(t *testing.T) {
	target, err := node.Start(node.Options{Listen: "127.0.0.1:0", HelloInterval: time.Hour, MaxPeers: 8, MaxTopicsPerPeer: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	sys := actor.NewActorSystem()
	rem := remote.NewRemote(sys, remote.Configure("127.0.0.1", 0))
	rem.Start()
	defer rem.Shutdown(false)
	pid := actor.NewPID(target.Address(), "ratchetd-node")
	for i := range 100 {
		sys.Root.Send(pid, &messages.Hello{Address: fmt.Sprintf("10.9.%d.%d:1", i/256, i%256), Reply: true})
	}
	for i := range 100 {
		sys.Root.Send(pid, &messages.Subscribed{Address: "10.9.0.0:1", Topic: fmt.Sprintf("t%d", i)})
	}
	waitFor(t, "the announcements to be processed", func() bool {
		st := target.Stats()
		return st.Dropped["peer-limit"] >= 92 && st.Dropped["topic-limit"] >= 84
	})
	st := target.Stats()
	if len(st.Peers) > 8 {
		t.Fatalf("%d peers remembered, cap 8", len(st.Peers))
	}
	if n := st.PeerTopics["10.9.0.0:1"]; n > 16 {
		t.Fatalf("%d topics remembered for one peer, cap 16", n)
	}
}

// TestStartOnAddressInUse: a node asked to listen where something already
// listens returns an error; protoactor's remote.Start panics there, and a
// panic would take an embedding program down with it.
func TestStartOnAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n, err := node.Start(node.Options{Listen: l.Addr().String(), HelloInterval: time.Hour})
	if err == nil {
		n.Close()
		t.Fatal("Start listened on an address in use")
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Start's error %v is not EADDRINUSE", err)
	}
}
