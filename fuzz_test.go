package ratchetd_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// FuzzHostileEnvelope feeds any bytes, as the payload of a signed
// envelope, to an installation: from a stranger, or from a peer it has a
// session with (so that mutated ratchet headers, counters and keys reach
// the session's skipped-key and DH-step checks, not just "no session").
// No actor of the engine may panic, at any point of the run; no input may
// stall the installation; nothing may decrypt but the peer's own messages
// sent through the engine; and every 100 inputs the conversation still
// works. Seeds: the peer's genuine messages (its X3DH first message and
// later ones), variants with huge counters, a DH-fallback entry, empty
// input.
//
// The engine keeps its state from one input to the next (a repeated input
// is a duplicate), as a long-running installation would; a failure found
// late in a run may need the inputs before it to reproduce.
func FuzzHostileEnvelope(f *testing.F) {
	w := newWorld(f, transport.Faults{}, func(o *ratchetd.Options) { o.RequestTimeout = 2 * time.Second })
	bob := w.account()
	peerID := newIdentity(f)
	peer := addDevice(f, w, peerID)
	stranger := newIdentity(f)
	introduce(f, peer, bob)
	var genuine []*messages.ProtocolMessage
	for i, text := range []string{"first", "second"} {
		mark := w.tap.mark()
		mustSend(f, peer, bob, text)
		genuine = append(genuine, w.tap.since(mark)...)
		w.deliver()
		if i == 0 {
			mustSend(f, bob, peer, "reply") // the peer's next message takes a DH step
			w.deliver()
		}
	}
	for _, pm := range genuine {
		raw, err := proto.Marshal(pm)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(true, raw)
		f.Add(false, raw)
		for _, e := range pm.EncryptedMessage {
			if e.DrHeader != nil {
				e.DrHeader.N, e.DrHeader.Pn = 1<<31, 1<<31
			}
		}
		mutated, _ := proto.Marshal(pm)
		f.Add(true, mutated)
	}
	f.Add(false, []byte{})
	dh, _ := proto.Marshal(&messages.ProtocolMessage{InstallationId: "m", EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{
		"none": {DhHeader: &messages.DHHeader{Key: make([]byte, 33)}, Payload: make([]byte, 64)},
	}})
	f.Add(true, dh)

	to := bob.Identity()
	topic := transport.PartitionedTopic(to)
	decrypted := w.eng.Stats().Decrypted // only the peer's own sends may add to it
	iterations := 0
	f.Fuzz(func(t *testing.T, asPeer bool, payload []byte) {
		signer := stranger
		if asPeer {
			signer = peerID
		}
		env, err := transport.Seal(signer, topic, &to, payload)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.mem.Publish(env); err != nil {
			return // over the transport's size limit: refused before the engine
		}
		// Manual delivery returns once the installation has processed
		// what it delivered (the counters are final), and takes about a
		// millisecond: no settling for the application handler.
		start := time.Now()
		w.mem.DeliverAll(0)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("an input held the installation up for %v", d)
		}
		st := w.eng.Stats()
		if st.ActorFailures != 0 {
			t.Fatalf("%d actor panics so far", st.ActorFailures)
		}
		if st.Decrypted != decrypted {
			t.Fatalf("%d hostile payloads decrypted", st.Decrypted-decrypted)
		}
		if iterations++; iterations%100 == 1 {
			mustSend(t, peer, bob, "still there")
			w.mem.DeliverAll(0)
			if decrypted++; w.eng.Stats().Decrypted != decrypted {
				t.Fatalf("the peer's message not decrypted after %d hostile payloads", iterations)
			}
		}
	})
}
