package ratchetd_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// downNet is a confirming in-memory transport on which an identity can be
// down, as a peer node that is unreachable: PublishConfirm fails, and
// Publish (fire and forget, like the node's) loses the envelope.
type downNet struct {
	*transport.Memory
	mu      sync.Mutex
	down    map[string]bool
	dropped int
}

func (n *downNet) isDown(env *messages.Envelope) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.down[string(env.Recipient)]
}

func (n *downNet) set(id keys.PublicKey, down bool) {
	n.mu.Lock()
	n.down[string(id[:])] = down
	n.mu.Unlock()
}

func (n *downNet) Publish(env *messages.Envelope) error {
	if n.isDown(env) {
		n.mu.Lock()
		n.dropped++
		n.mu.Unlock()
		return nil
	}
	return n.Memory.Publish(env)
}

func (n *downNet) PublishConfirm(env *messages.Envelope, done func(error)) {
	if n.isDown(env) {
		time.AfterFunc(5*time.Millisecond, func() { done(errors.New("injected: the recipient's node is down")) })
		return
	}
	err := n.Memory.Publish(env)
	go done(err)
}

// TestAdvertToDownPeerArrivesWhenBack: a bundle advert goes through the
// outbox on a confirming transport. bob2, a device alice does not know,
// answers her message with its bundle while alice's node is down; once it
// is back, the advert arrives and alice's next message includes bob2. When
// adverts were published once (Transport.Publish), this one was lost and
// bob2's next advert was rate-limited for BundleAdvertInterval (2 h).
func TestAdvertToDownPeerArrivesWhenBack(t *testing.T) {
	net := &downNet{Memory: transport.NewMemory(transport.MemoryOptions{}), down: map[string]bool{}}
	defer net.Close()
	var in byRecipient
	eng, err := ratchetd.Open(ratchetd.Options{
		Store: persistence.NewMemory(), Transport: net, Handler: in.handle,
		OutboxRetryInterval: 50 * time.Millisecond, MaxOutboxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	alice, err := eng.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	bobKey := newIdentity(t)
	bobID, err := bobKey.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	bob1, err := eng.AddInstallation(bobKey)
	if err != nil {
		t.Fatal(err)
	}
	introduce(t, alice, bob1)
	bob2, err := eng.AddInstallation(bobKey) // unknown to alice
	if err != nil {
		t.Fatal(err)
	}

	net.set(alice.Identity(), true)
	if _, err := alice.Send(bobID.Public, []byte("only bob1 knows")); err != nil {
		t.Fatal(err)
	}
	awaitTrue(t, 5*time.Second, "bob2's advert", func() bool { return eng.Stats().Adverts == 1 })
	time.Sleep(300 * time.Millisecond) // a few failed offers
	if has(t, alice, bobID.Public, bob2.InstallationID()) {
		t.Fatal("alice learnt of bob2 while her node was down")
	}
	net.set(alice.Identity(), false)
	awaitTrue(t, 5*time.Second, "bob2's advert to reach alice", func() bool { return has(t, alice, bobID.Public, bob2.InstallationID()) })

	r, err := alice.Send(bobID.Public, []byte("now both"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(r.Installations, bob2.InstallationID()) {
		t.Fatalf("bob2 not included after its advert: %+v", r)
	}
	awaitTrue(t, 5*time.Second, "bob2 to receive", func() bool { return in.count(bobID.Public) == 2 })
	if eng.Stats().Adverts != 1 {
		t.Fatalf("%d adverts, want 1", eng.Stats().Adverts)
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if net.dropped != 0 {
		t.Fatalf("%d envelopes published without confirmation to a down node", net.dropped)
	}
}

// has reports whether a knows installation id of identity.
func has(t *testing.T, a *ratchetd.Account, identity keys.PublicKey, id string) bool {
	t.Helper()
	ds, err := a.Devices(identity)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ds, func(d ratchetd.Device) bool { return d.InstallationID == id })
}

// awaitTrue polls cond until it holds, or fails the test after d.
func awaitTrue(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
