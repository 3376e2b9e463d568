package ratchetd_test

import (
	"bytes"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// TestHostileInput feeds an installation garbage of every kind through the
// transport: nothing crashes the engine, everything is counted and dropped,
// and the conversation goes on.
func TestHostileInput(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "genuine")
	w.mem.DeliverAll(0)
	// Capture a genuine message to mutate.
	mark := w.tap.mark()
	mustSend(t, alice, bob, "second")
	genuine := w.tap.since(mark)[0]
	w.deliver()

	mallory := newIdentity(t)
	to := bob.Identity()
	topic := transport.PartitionedTopic(to)
	send := func(signer keys.PrivateKey, payload []byte) {
		env, err := transport.Seal(signer, topic, &to, payload)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.mem.Publish(env); err != nil {
			t.Fatal(err)
		}
	}
	r := mrand.New(mrand.NewPCG(1, 2))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}
	raw, _ := proto.Marshal(genuine)
	for i := range 200 {
		switch i % 8 {
		case 0: // random bytes
			send(mallory, rnd(r.IntN(300)))
		case 1: // a truncated genuine message
			send(mallory, raw[:r.IntN(len(raw))])
		case 2: // a genuine message with a flipped byte
			b := bytes.Clone(raw)
			b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
			send(mallory, b)
		case 3: // invalid keys in every header
			m := proto.Clone(genuine).(*messages.ProtocolMessage)
			for _, e := range m.EncryptedMessage {
				e.DrHeader.Key = rnd(33)
				e.X3DhHeader.Key = append([]byte{0x04}, rnd(32)...)
			}
			b, _ := proto.Marshal(m)
			send(mallory, b)
		case 4: // huge counters
			m := proto.Clone(genuine).(*messages.ProtocolMessage)
			for _, e := range m.EncryptedMessage {
				e.DrHeader.N, e.DrHeader.Pn = 0xffffffff, 0xfffffff0
			}
			b, _ := proto.Marshal(m)
			send(mallory, b)
		case 5: // short and empty ciphertexts
			m := proto.Clone(genuine).(*messages.ProtocolMessage)
			for _, e := range m.EncryptedMessage {
				e.Payload = e.Payload[:r.IntN(48)]
			}
			b, _ := proto.Marshal(m)
			send(mallory, b)
		case 6: // a DH entry with garbage
			m := &messages.ProtocolMessage{InstallationId: "m", EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{
				"none": {DhHeader: &messages.DHHeader{Key: rnd(33)}, Payload: rnd(r.IntN(40))},
			}}
			b, _ := proto.Marshal(m)
			send(mallory, b)
		case 7: // oversized payload: refused by the transport
			send(mallory, rnd(transport.DefaultMaxPayload+1))
		}
	}
	// Raw envelope garbage that is not even an envelope.
	w.mem.Inject(topic, rnd(100))
	w.deliver()
	st := w.eng.Stats()
	if st.Decrypted != 2 {
		t.Fatalf("decrypted %d, want only the 2 genuine messages", st.Decrypted)
	}
	if st.Malformed+st.DecryptFailures+st.Unwrapped+st.Duplicates == 0 {
		t.Fatalf("nothing counted: %+v", st)
	}
	if ms := w.eng.Transport().(*tap).Transport.(*transport.Memory).Stats(); ms.Rejected < 2 {
		t.Fatalf("transport rejected %d envelopes, want the oversized and the garbage ones", ms.Rejected)
	}
	for _, m := range w.messages(bob) {
		if m.Kind == ratchetd.KindDirect && !slices.Contains([]string{"genuine", "second", "after"}, string(m.Payload)) {
			t.Fatalf("forged message delivered as direct: %q", m.Payload)
		}
	}
	mustSend(t, alice, bob, "after")
	w.deliver()
	if got := w.received(bob); !slices.Contains(got, "after") {
		t.Fatalf("conversation broken after the attack: %q", got)
	}
}

// faultyStore fails or panics on the next commit that writes a key with a
// chosen prefix.
type faultyStore struct {
	persistence.Store
	mu     sync.Mutex
	target []byte
	panics bool
	hits   int
}

var errInjected = errors.New("injected store failure")

func (f *faultyStore) arm(prefix []byte, panics bool) {
	f.mu.Lock()
	f.target, f.panics = prefix, panics
	f.mu.Unlock()
}

func (f *faultyStore) Commit(ws []persistence.Write) error {
	f.mu.Lock()
	target, panics := f.target, f.panics
	hit := false
	for _, w := range ws {
		hit = hit || (target != nil && bytes.HasPrefix(w.Key, target))
	}
	if hit {
		f.target = nil
		f.hits++
	}
	f.mu.Unlock()
	if hit && panics {
		panic("injected store panic")
	}
	if hit {
		return errInjected
	}
	return f.Store.Commit(ws)
}

// TestStoreFailures: a failed commit leaves no ciphertext out and no
// plaintext delivered, and the state at its last durable snapshot; a panic
// in the Committer is survived (it is restarted); the conversation goes on
// and nothing is delivered twice.
func TestStoreFailures(t *testing.T) {
	fs := &faultyStore{Store: persistence.NewMemory()}
	w := newWorld(t, transport.Faults{}, func(o *ratchetd.Options) {
		o.Store = fs
		o.RequestTimeout = 300 * time.Millisecond
		o.SendReserve = -1 // every send commits (TestReservedSendsAndStoreFailures: with keys reserved)
	})
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "one")
	w.deliver()
	aliceSessions := persistence.SessionPrefix(alice.InstallationID(), bob.Identity().Bytes())
	bobSessions := persistence.SessionPrefix(bob.InstallationID(), alice.Identity().Bytes())

	for _, panics := range []bool{false, true} {
		// The sender's state cannot be committed: the send fails and no
		// ciphertext leaves.
		fs.arm(aliceSessions, panics)
		mark := w.tap.mark()
		if _, err := alice.Send(bob.Identity(), []byte("not durable")); err == nil {
			t.Fatalf("panics=%v: send succeeded although its state could not be committed", panics)
		}
		if n := len(w.tap.since(mark)); n != 0 {
			t.Fatalf("panics=%v: %d ciphertexts left without a durable state", panics, n)
		}
		// The receiver's state cannot be committed: the message is not
		// delivered; later ones are.
		mustSend(t, alice, bob, fmt.Sprintf("lost at bob %v", panics))
		fs.arm(bobSessions, panics)
		w.deliver()
		mustSend(t, alice, bob, fmt.Sprintf("after %v", panics))
		w.deliver()
	}
	if fs.hits != 4 {
		t.Fatalf("%d faults injected, want 4", fs.hits)
	}
	if n := w.eng.Stats().ActorFailures; n != 2 {
		t.Fatalf("ActorFailures = %d after 2 store panics, want 2", n)
	}
	got := w.received(bob)
	if !slices.Equal(got, []string{"one", "after false", "after true"}) {
		t.Fatalf("bob got %q", got)
	}
	mustSend(t, bob, alice, "and back")
	w.deliver()
	if got := w.received(alice); !slices.Equal(got, []string{"and back"}) {
		t.Fatalf("alice got %q", got)
	}
}

// TestUnwrappedPayloads: a payload that is not a ProtocolMessage — such as
// Status's ApplicationMetadataMessage sent with SkipEncryptionLayer, which
// protobuf may even parse as an empty ProtocolMessage — reaches the
// application unwrapped, with its sender (status-compat.md §1).
func TestUnwrappedPayloads(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	bob := w.account()
	alice := newIdentity(t)
	// ApplicationMetadataMessage{signature: 1, payload: 2, type: 3}.
	amm := []byte{0x0a, 0x02, 0xaa, 0xbb, 0x12, 0x05, 'h', 'e', 'l', 'l', 'o', 0x18, 0x01}
	to := bob.Identity()
	env, err := transport.Seal(alice, transport.PartitionedTopic(to), &to, amm)
	if err != nil {
		t.Fatal(err)
	}
	w.mem.Publish(env)
	w.deliver()
	msgs := w.messages(bob)
	pub, _ := alice.Public()
	if len(msgs) != 1 || msgs[0].Kind != ratchetd.KindUnwrapped || !bytes.Equal(msgs[0].Payload, amm) || msgs[0].Sender != pub {
		t.Fatalf("bob got %+v", msgs)
	}
}
