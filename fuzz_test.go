package ratchetd_test

import (
	"crypto/rand"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// FuzzHostileEnvelope: whatever a peer puts in an envelope it signed to an
// installation (any bytes as the payload: a ProtocolMessage or not, with
// any bundles, headers, keys and counters), no actor of the engine panics,
// nothing decrypts, and the installation's own conversation goes on. The
// seeds are a genuine first message and a later one, and variants of them.
func FuzzHostileEnvelope(f *testing.F) {
	w := newWorld(f, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	introduce(f, alice, bob)
	mark := w.tap.mark()
	mustSend(f, alice, bob, "first")
	first := w.tap.since(mark)
	w.deliver()
	mark = w.tap.mark()
	mustSend(f, bob, alice, "reply")
	w.deliver()
	mustSend(f, alice, bob, "later")
	later := w.tap.since(mark)
	w.deliver()
	for _, pm := range append(first, later...) {
		raw, err := proto.Marshal(pm)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		for _, e := range pm.EncryptedMessage {
			if e.DrHeader != nil {
				e.DrHeader.N, e.DrHeader.Pn = 1<<31, 1<<31
			}
		}
		mutated, _ := proto.Marshal(pm)
		f.Add(mutated)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x01})
	dh, _ := proto.Marshal(&messages.ProtocolMessage{InstallationId: "m", EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{
		"none": {DhHeader: &messages.DHHeader{Key: make([]byte, 33)}, Payload: make([]byte, 64)},
	}})
	f.Add(dh)
	mallory, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	to := bob.Identity()
	topic := transport.PartitionedTopic(to)
	iterations := 0
	f.Fuzz(func(t *testing.T, payload []byte) {
		before := w.eng.Stats()
		env, err := transport.Seal(mallory.Private, topic, &to, payload)
		if err != nil {
			t.Skip() // too large to seal
		}
		if err := w.mem.Publish(env); err != nil {
			t.Skip() // refused by the transport (oversized)
		}
		// Manual delivery returns once the installation has processed
		// what it delivered (the counters are final); no settling for the
		// application handler, so that an exec takes a millisecond.
		w.mem.DeliverAll(0)
		after := w.eng.Stats()
		if n := after.ActorFailures - before.ActorFailures; n != 0 {
			t.Fatalf("%d actor panics on a hostile payload", n)
		}
		if n := after.Decrypted - before.Decrypted; n != 0 {
			t.Fatalf("a payload from mallory decrypted (%d)", n)
		}
		if iterations++; iterations%100 == 1 {
			mustSend(t, alice, bob, "still there")
			w.deliver()
			if w.eng.Stats().Decrypted != after.Decrypted+1 {
				t.Fatalf("alice's message to bob not decrypted after %d hostile payloads", iterations)
			}
		}
	})
}
