package ratchetd_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// Flow 1: first contact with a known bundle: X3DH and the first ratchet
// message; the X3DH header is repeated until the peer's first ratchet
// message confirms the session.
func TestFlowFirstContactWithBundle(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)

	mark := w.tap.mark()
	for _, s := range []string{"one", "two", "three"} {
		r := mustSend(t, alice, bob, s)
		if r.DHFallback || !slices.Equal(r.Installations, []string{bob.InstallationID()}) {
			t.Fatalf("report %+v", r)
		}
	}
	for _, pm := range w.tap.since(mark) {
		e := pm.EncryptedMessage[bob.InstallationID()]
		if e == nil || e.X3DhHeader == nil || e.DrHeader == nil {
			t.Fatalf("message without X3DH+DR headers: %v", pm)
		}
		if pm.InstallationId != alice.InstallationID() || len(pm.Bundles) != 1 {
			t.Fatalf("installation id or bundle missing: %v", pm)
		}
	}
	w.deliver()
	if got := w.received(bob); !slices.Equal(got, []string{"one", "two", "three"}) {
		t.Fatalf("bob got %q", got)
	}
	mustSend(t, bob, alice, "reply")
	w.deliver()
	if got := w.received(alice); !slices.Equal(got, []string{"reply"}) {
		t.Fatalf("alice got %q", got)
	}
	mark = w.tap.mark()
	mustSend(t, alice, bob, "confirmed")
	for _, pm := range w.tap.since(mark) {
		if e := pm.EncryptedMessage[bob.InstallationID()]; e == nil || e.X3DhHeader != nil {
			t.Fatalf("X3DH header still sent after confirmation: %v", pm)
		}
	}
	w.deliver()
	if got := w.received(bob); len(got) != 4 || got[3] != "confirmed" {
		t.Fatalf("bob got %q", got)
	}
	st := w.eng.Stats()
	if st.X3DHActive != 1 || st.X3DHPassive != 1 {
		t.Fatalf("X3DH ran %d active, %d passive times; want 1 each (repeated headers are idempotent)", st.X3DHActive, st.X3DHPassive)
	}
}

// Flow 2: first contact without a bundle: the DH fallback under "none" with
// the bundle attached; the reply establishes a ratchet session.
func TestFlowFirstContactWithoutBundle(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	mark := w.tap.mark()
	r := mustSend(t, alice, bob, "hello stranger")
	if !r.DHFallback {
		t.Fatalf("report %+v, want DH fallback", r)
	}
	pms := w.tap.since(mark)
	if len(pms) != 1 || pms[0].EncryptedMessage["none"].GetDhHeader() == nil || len(pms[0].Bundles) != 1 {
		t.Fatalf("want one DH message under \"none\" with a bundle, got %v", pms)
	}
	w.deliver()
	msgs := w.messages(bob)
	if len(msgs) != 1 || string(msgs[0].Payload) != "hello stranger" || !msgs[0].NoForwardSecrecy {
		t.Fatalf("bob got %+v", msgs)
	}
	mark = w.tap.mark()
	r = mustSend(t, bob, alice, "hi, let's ratchet")
	if r.DHFallback || len(r.Installations) != 1 {
		t.Fatalf("reply report %+v: the attached bundle should have enabled X3DH", r)
	}
	if e := w.tap.since(mark)[0].EncryptedMessage[alice.InstallationID()]; e.GetX3DhHeader() == nil || e.GetDrHeader() == nil {
		t.Fatalf("reply is not an X3DH message: %v", e)
	}
	w.deliver()
	if got := w.received(alice); !slices.Equal(got, []string{"hi, let's ratchet"}) {
		t.Fatalf("alice got %q", got)
	}
	mustSend(t, alice, bob, "now with forward secrecy")
	w.deliver()
	msgs = w.messages(bob)
	if len(msgs) != 2 || msgs[1].NoForwardSecrecy {
		t.Fatalf("bob got %+v", msgs)
	}
}

// pairUp makes a set of installations of one identity know and approve each
// other (status-compat.md §9: pairing needs explicit approval).
func pairUp(t *testing.T, w *world, devs ...*ratchetd.Account) {
	t.Helper()
	for _, d := range devs {
		if err := d.AnnounceDevice(); err != nil {
			t.Fatal(err)
		}
	}
	w.deliver()
	for _, d := range devs {
		for _, o := range devs {
			if d == o {
				continue
			}
			known := false
			list, err := d.Devices(d.Identity())
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range list {
				if x.InstallationID == o.InstallationID() {
					known = true
					if x.Enabled {
						t.Fatalf("own installation %s enabled before approval", x.InstallationID)
					}
				}
			}
			if !known {
				t.Fatalf("%s does not know %s", d.InstallationID(), o.InstallationID())
			}
			if err := d.ApproveDevice(d.Identity(), o.InstallationID()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func newIdentity(t testing.TB) keys.PrivateKey {
	kp, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp.Private
}

func addDevice(t testing.TB, w *world, id keys.PrivateKey) *ratchetd.Account {
	a, err := w.eng.AddInstallation(id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// exportedBundle is a's bundle as ExportBundle gives it, decoded.
func exportedBundle(t *testing.T, a *ratchetd.Account) *messages.Bundle {
	t.Helper()
	exported, err := a.ExportBundle()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(exported)
	if err != nil {
		t.Fatal(err)
	}
	var b messages.Bundle
	if err := proto.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

// sealedTo seals pm to `to` on its partitioned topic in an envelope signed
// by signer (an envelope as it goes over the wire, which anyone on the
// transport can keep and publish again).
func sealedTo(t *testing.T, signer keys.PrivateKey, to keys.PublicKey, pm *messages.ProtocolMessage) *messages.Envelope {
	t.Helper()
	payload, err := proto.Marshal(pm)
	if err != nil {
		t.Fatal(err)
	}
	env, err := transport.Seal(signer, transport.PartitionedTopic(to), &to, payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// injectTo publishes pm to `to` on its partitioned topic in an envelope
// signed by signer, and delivers it.
func injectTo(t *testing.T, w *world, signer keys.PrivateKey, to keys.PublicKey, pm *messages.ProtocolMessage) {
	t.Helper()
	if err := w.mem.Publish(sealedTo(t, signer, to, pm)); err != nil {
		t.Fatal(err)
	}
	w.deliver()
}

// Flow 3: every bundle is verified before anything is stored, and a bundle
// whose identity is not the transport sender's is rejected.
func TestFlowBundleChecks(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	mallory := newIdentity(t)
	bobBundle := exportedBundle(t, bob)
	inject := func(signer keys.PrivateKey, pm *messages.ProtocolMessage) {
		injectTo(t, w, signer, alice.Identity(), pm)
	}
	// Mallory forwards Bob's genuine bundle: not Mallory's, so not stored.
	inject(mallory, &messages.ProtocolMessage{InstallationId: "mallory-1", Bundles: []*messages.Bundle{bobBundle}})
	if devs, _ := alice.Devices(bob.Identity()); len(devs) != 0 {
		t.Fatalf("bundle of another identity stored: %+v", devs)
	}
	// A bundle with one signature bit flipped, from its own identity.
	bad := proto.Clone(bobBundle).(*messages.Bundle)
	bad.Signature[7] ^= 0x10
	before := w.eng.Stats().BadBundles
	inject(mallory, &messages.ProtocolMessage{InstallationId: "x", Bundles: []*messages.Bundle{bad}})
	if w.eng.Stats().BadBundles != before+1 {
		t.Fatalf("tampered bundle not counted as bad")
	}
	if devs, _ := alice.Devices(bob.Identity()); len(devs) != 0 {
		t.Fatalf("tampered bundle stored: %+v", devs)
	}
	// A version change without a new signature is rejected too.
	bumped := proto.Clone(bobBundle).(*messages.Bundle)
	for _, spk := range bumped.SignedPreKeys {
		spk.Version = 99
	}
	if err := alice.ImportBundle(base64.RawURLEncoding.EncodeToString(mustMarshal(t, bumped))); !errors.Is(err, ratchetd.ErrBadBundle) {
		t.Fatalf("import of an altered bundle: %v", err)
	}
	// The genuine one, attached by Bob himself, is stored.
	mustSend(t, bob, alice, "hello")
	w.deliver()
	if devs, _ := alice.Devices(bob.Identity()); len(devs) != 1 || devs[0].InstallationID != bob.InstallationID() || !devs[0].Enabled {
		t.Fatalf("bob's device not stored: %+v", devs)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Flow 4: multi-device. Three installations of Alice and two of Bob
// converse; every device sees every message.
func TestFlowMultiDevice(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	aliceID, bobID := newIdentity(t), newIdentity(t)
	a := []*ratchetd.Account{addDevice(t, w, aliceID), addDevice(t, w, aliceID), addDevice(t, w, aliceID)}
	b := []*ratchetd.Account{addDevice(t, w, bobID), addDevice(t, w, bobID)}
	pairUp(t, w, a...)
	pairUp(t, w, b...)
	introduce(t, a[0], b[0]) // Bob's bundle lists both of his devices
	all := append(append([]*ratchetd.Account{}, a...), b...)
	var sent []struct {
		from *ratchetd.Account
		text string
	}
	talk := func(from *ratchetd.Account, peer *ratchetd.Account, text string) {
		mustSend(t, from, peer, text)
		sent = append(sent, struct {
			from *ratchetd.Account
			text string
		}{from, text})
		w.deliver()
	}
	talk(a[0], b[0], "a0: hello bob")
	talk(b[1], a[0], "b1: hello alice")
	talk(a[2], b[0], "a2: from my third device")
	talk(b[0], a[1], "b0: to all of you")
	talk(a[1], b[1], "a1: last one")
	for _, dev := range all {
		got := w.received(dev)
		for _, s := range sent {
			if s.from == dev {
				continue
			}
			if !slices.Contains(got, s.text) {
				t.Errorf("device %s did not see %q (got %q)", dev.InstallationID(), s.text, got)
			}
		}
		if len(got) != len(sent)-countFrom(sent, dev) {
			t.Errorf("device %s saw %d messages, want %d: %q", dev.InstallationID(), len(got), len(sent)-countFrom(sent, dev), got)
		}
	}
	// Disabling a paired device removes it from the bundle.
	if err := a[0].DisableDevice(a[0].Identity(), a[2].InstallationID()); err != nil {
		t.Fatal(err)
	}
	s, _ := a[0].ExportBundle()
	raw, _ := base64.RawURLEncoding.DecodeString(s)
	var bb messages.Bundle
	proto.Unmarshal(raw, &bb)
	if _, ok := bb.SignedPreKeys[a[2].InstallationID()]; ok || len(bb.SignedPreKeys) != 2 {
		t.Fatalf("disabled device still in the bundle: %v", bb.SignedPreKeys)
	}
}

func countFrom(sent []struct {
	from *ratchetd.Account
	text string
}, dev *ratchetd.Account) int {
	n := 0
	for _, s := range sent {
		if s.from == dev {
			n++
		}
	}
	return n
}

// Flow 5: re-keying. A peer bundle with a higher version expires the old
// prekey; the next send runs a fresh X3DH; old sessions stay decryptable.
func TestFlowRekey(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "before")
	w.deliver()
	mustSend(t, bob, alice, "ack")
	w.deliver()
	// A message on the old session, held back.
	mustSend(t, alice, bob, "late, old session")
	held := w.mem.Pending()
	if held != 1 {
		t.Fatalf("%d pending", held)
	}
	w.clock.Advance(25 * time.Hour) // Bob's prekey expires (BundleRefreshInterval 24 h)
	mark := w.tap.mark()
	mustSend(t, bob, alice, "rotated")
	pms := w.tap.since(mark)
	var version uint32
	for _, spk := range pms[0].Bundles[0].SignedPreKeys {
		version = spk.Version
	}
	if version != 2 {
		t.Fatalf("bundle version after expiry = %d, want 2", version)
	}
	x3dhBefore := w.eng.Stats().X3DHActive
	// Deliver Bob's message first, then the held one (reordered).
	w.mem.DeliverAll(0)
	w.settle()
	mark = w.tap.mark()
	mustSend(t, alice, bob, "after")
	e := w.tap.since(mark)[0].EncryptedMessage[bob.InstallationID()]
	if e.GetX3DhHeader() == nil {
		t.Fatalf("no fresh X3DH after the peer's re-key")
	}
	if w.eng.Stats().X3DHActive <= x3dhBefore {
		t.Fatalf("no new active X3DH")
	}
	w.deliver()
	got := w.received(bob)
	for _, want := range []string{"before", "late, old session", "after"} {
		if !slices.Contains(got, want) {
			t.Fatalf("bob got %q, missing %q", got, want)
		}
	}
	if !slices.Contains(w.received(alice), "rotated") {
		t.Fatalf("alice got %q", w.received(alice))
	}
}

// Flow 6: concurrent initiation. Both sides run X3DH at once; both converge
// on the session the byte-order rule picks within one round trip; nothing
// is lost; X3DH headers stop.
func TestFlowConcurrentInitiation(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	introduce(t, bob, alice)
	mustSend(t, alice, bob, "a1")
	mustSend(t, bob, alice, "b1")
	w.deliver()
	// One round trip on the chosen session.
	mark := w.tap.mark()
	mustSend(t, alice, bob, "a2")
	mustSend(t, bob, alice, "b2")
	round := w.tap.since(mark)
	idA := round[0].EncryptedMessage[bob.InstallationID()].GetDrHeader().GetId()
	idB := round[1].EncryptedMessage[alice.InstallationID()].GetDrHeader().GetId()
	if !bytes.Equal(idA, idB) {
		t.Fatalf("the two sides send on different sessions: %x vs %x", idA, idB)
	}
	w.deliver()
	mark = w.tap.mark()
	mustSend(t, alice, bob, "a3")
	mustSend(t, bob, alice, "b3")
	for _, pm := range w.tap.since(mark) {
		for _, e := range pm.EncryptedMessage {
			if e.X3DhHeader != nil {
				t.Fatalf("X3DH header still sent after a round trip")
			}
			if !bytes.Equal(e.GetDrHeader().GetId(), idA) {
				t.Fatalf("session changed")
			}
		}
	}
	w.deliver()
	if got := w.received(bob); !slices.Equal(got, []string{"a1", "a2", "a3"}) {
		t.Fatalf("bob got %q", got)
	}
	if got := w.received(alice); !slices.Equal(got, []string{"b1", "b2", "b3"}) {
		t.Fatalf("alice got %q", got)
	}
}

// Flow 7: a partitioned device. A message with no entry for this
// installation is answered with an empty message carrying its bundle; after
// it the sender includes the device.
func TestFlowPartitionedDevice(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	bobID := newIdentity(t)
	alice, bob1 := w.account(), addDevice(t, w, bobID)
	introduce(t, alice, bob1)
	bob2 := addDevice(t, w, bobID) // unknown to Alice
	r := mustSend(t, alice, bob1, "only bob1 knows")
	if !slices.Equal(r.Installations, []string{bob1.InstallationID()}) {
		t.Fatalf("report %+v", r)
	}
	w.deliver()
	if w.eng.Stats().Adverts != 1 {
		t.Fatalf("adverts = %d, want 1 (bob2's reply)", w.eng.Stats().Adverts)
	}
	r = mustSend(t, alice, bob1, "now both")
	if len(r.Installations) != 2 || !slices.Contains(r.Installations, bob2.InstallationID()) {
		t.Fatalf("bob2 not included after its advert: %+v", r)
	}
	w.deliver()
	if got := w.received(bob2); !slices.Equal(got, []string{"now both"}) {
		t.Fatalf("bob2 got %q", got)
	}
}

// Flow 8: account recovery. A new installation of the same identity with an
// empty state becomes reachable through its bundle; a message that fails to
// decrypt is answered with the current bundle (rate-limited), and the
// conversation recovers.
func TestFlowAccountRecovery(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	bobID := newIdentity(t)
	alice, bob := w.account(), addDevice(t, w, bobID)
	introduce(t, alice, bob)
	mustSend(t, alice, bob, "hi")
	w.deliver()
	mustSend(t, bob, alice, "hi back")
	w.deliver()

	// Bob's session state is lost (a corrupt record), the rest survives.
	corrupt := 0
	prefix := persistence.SessionPrefix(bob.InstallationID(), alice.Identity().Bytes())
	w.restartWith(func() {
		w.store.Scan(prefix, func(k, _ []byte) error {
			w.store.Commit([]persistence.Write{{Key: bytes.Clone(k), Value: []byte{0xff, 0x01, 0x02}}})
			corrupt++
			return nil
		})
	}, nil)
	if corrupt == 0 {
		t.Fatal("no session record found")
	}
	alice, bob = w.reload(alice), w.reload(bob)
	adverts := w.eng.Stats().Adverts
	mustSend(t, alice, bob, "lost")
	mustSend(t, alice, bob, "lost too")
	w.deliver()
	if got := w.eng.Stats().Adverts - adverts; got != 1 {
		t.Fatalf("%d bundle replies to undecryptable messages, want 1 (rate-limited)", got)
	}
	mustSend(t, alice, bob, "recovered")
	w.deliver()
	if got := w.received(bob); got[len(got)-1] != "recovered" {
		t.Fatalf("bob got %q", got)
	}

	// A new installation of Bob's identity on an empty store: the old
	// device is gone.
	if err := w.eng.Actors().StopInstallation(bob.InstallationID()); err != nil {
		t.Fatal(err)
	}
	bobNew := addDevice(t, w, bobID)
	mustSend(t, alice, bob, "to the old device only")
	w.deliver()
	r := mustSend(t, alice, bobNew, "to the new one")
	if !slices.Contains(r.Installations, bobNew.InstallationID()) {
		t.Fatalf("new installation not reachable: %+v", r)
	}
	w.deliver()
	if got := w.received(bobNew); !slices.Equal(got, []string{"to the new one"}) {
		t.Fatalf("new device got %q", got)
	}
}

// Flow 9: public messages pass through unencrypted; the bundle is still
// processed.
func TestFlowPublicMessage(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice, bob := w.account(), w.account()
	if err := bob.JoinPublic("status"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SendPublic("status", []byte("hello everyone")); err != nil {
		t.Fatal(err)
	}
	w.deliver()
	msgs := w.messages(bob)
	if len(msgs) != 1 || msgs[0].Kind != ratchetd.KindPublic || string(msgs[0].Payload) != "hello everyone" || msgs[0].Sender != alice.Identity() {
		t.Fatalf("bob got %+v", msgs)
	}
	// The bundle came with it: Bob can now reach Alice with X3DH.
	if r := mustSend(t, bob, alice, "dm"); r.DHFallback {
		t.Fatalf("the public message's bundle was not stored")
	}
}

// Flow 10: a private group chat is a pairwise-encrypted fan-out.
func TestFlowGroupChat(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	members := []*ratchetd.Account{w.account(), w.account(), w.account(), w.account()}
	for _, m := range members[1:] {
		introduce(t, members[0], m)
	}
	var ids []keys.PublicKey
	for _, m := range members {
		ids = append(ids, m.Identity())
	}
	mark := w.tap.mark()
	reps, err := members[0].SendGroup(ids, []byte("group hello"))
	if err != nil || len(reps) != 3 {
		t.Fatalf("reports %+v, err %v", reps, err)
	}
	if n := len(w.tap.since(mark)); n != 3 {
		t.Fatalf("%d pairwise messages, want 3", n)
	}
	w.deliver()
	for _, m := range members[1:] {
		if got := w.received(m); !slices.Equal(got, []string{"group hello"}) {
			t.Fatalf("%s got %q", m.InstallationID(), got)
		}
	}
}

// Flow 11: out-of-order, dropped and duplicated deliveries within the
// limits decrypt correctly; duplicates are reported and never delivered
// twice.
func TestFlowLossyNetwork(t *testing.T) {
	w := newWorld(t, transport.Faults{Duplicate: 0.3, Reorder: 0.5, Seed: 11}, nil)
	alice, bob := w.account(), w.account()
	introduce(t, alice, bob)
	introduce(t, bob, alice)
	want := map[string]bool{}
	for i := range 40 {
		text := fmt.Sprintf("m%d", i)
		from, to := alice, bob
		if i%3 == 2 {
			from, to = bob, alice
		}
		mustSend(t, from, to, text)
		want[text] = true
		if i%4 == 3 {
			w.mem.DeliverAll(w.mem.Pending() / 2) // leave some in flight
		}
		if i == 20 {
			w.mem.DropAll() // a burst of loss
		}
	}
	w.deliver()
	got := append(w.received(alice), w.received(bob)...)
	seen := map[string]int{}
	for _, s := range got {
		seen[s]++
		if seen[s] > 1 {
			t.Fatalf("%q delivered twice", s)
		}
	}
	if w.eng.Stats().Duplicates == 0 {
		t.Fatalf("no duplicate was reported (the transport duplicated 30%%)")
	}
	if w.eng.Stats().DecryptFailures != 0 {
		t.Fatalf("%d decrypt failures", w.eng.Stats().DecryptFailures)
	}
	lost := 0
	for s := range want {
		if seen[s] == 0 {
			lost++
		}
	}
	if lost == 0 || lost > 12 {
		t.Fatalf("%d messages missing; only the dropped burst may be", lost)
	}
}

// A sender's last verified bundle is recognised by its signature and not
// verified again; the same signature over other content (a prekey version
// changed, a device added) is ignored, as it is when it comes first: it
// fails verification.
func TestBundleSignatureCache(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	alice := w.account()
	bobID := newIdentity(t)
	bob := addDevice(t, w, bobID)
	genuine := exportedBundle(t, bob)
	inject := func(b *messages.Bundle) {
		injectTo(t, w, bobID, alice.Identity(), &messages.ProtocolMessage{InstallationId: bob.InstallationID(), Bundles: []*messages.Bundle{b}})
	}
	altered := func() *messages.Bundle {
		b := proto.Clone(genuine).(*messages.Bundle)
		for _, spk := range b.SignedPreKeys {
			spk.Version = 99
		}
		b.SignedPreKeys["forged-device"] = proto.Clone(b.SignedPreKeys[bob.InstallationID()]).(*messages.SignedPreKey)
		return b
	}
	check := func(when string) {
		t.Helper()
		devs, err := alice.Devices(bob.Identity())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			if d.InstallationID != bob.InstallationID() || d.Version == 99 {
				t.Fatalf("%s: alice knows %+v", when, devs)
			}
		}
	}

	bad := w.eng.Stats().BadBundles
	inject(altered()) // first: verified, and refused
	if w.eng.Stats().BadBundles != bad+1 {
		t.Fatal("an altered bundle was not refused")
	}
	check("after an altered bundle")
	inject(genuine)
	if devs, _ := alice.Devices(bob.Identity()); len(devs) != 1 {
		t.Fatalf("the genuine bundle stored %+v, want bob's device", devs)
	}
	bad = w.eng.Stats().BadBundles
	inject(altered()) // after the genuine one: recognised by its signature
	check("after the genuine bundle and an altered one")
	if w.eng.Stats().BadBundles != bad {
		t.Fatal("an altered bundle under the last verified signature was verified again")
	}
}

// slowStore makes every commit take a while, as an fsync does.
type slowStore struct {
	persistence.Store
	delay   time.Duration
	commits atomic.Int64
}

func (s *slowStore) Commit(ws []persistence.Write) error {
	s.commits.Add(1)
	time.Sleep(s.delay)
	return s.Store.Commit(ws)
}

// A group message's pairwise sends run concurrently and share group
// commits: sent one after another, 8 members took 8 commits (each send
// waits for its own), now they take a few. The reports follow the
// members' order, a member listed twice gets one copy, and a member that
// cannot be reached is reported without holding up the others.
func TestSendGroupSharesCommits(t *testing.T) {
	store := &slowStore{Store: persistence.NewMemory(), delay: 30 * time.Millisecond}
	w := newWorld(t, transport.Faults{}, func(o *ratchetd.Options) { o.Store = store })
	sender := w.account()
	var members []*ratchetd.Account
	var ids []keys.PublicKey
	for range 8 {
		m := w.account()
		introduce(t, sender, m)
		members = append(members, m)
		ids = append(ids, m.Identity())
	}
	stranger := newIdentity(t) // no bundle known: DH fallback
	strangerID, err := stranger.Public()
	if err != nil {
		t.Fatal(err)
	}
	withStranger := append(append([]keys.PublicKey{sender.Identity()}, ids[:4]...), append([]keys.PublicKey{strangerID}, ids[4:]...)...)
	withStranger = append(withStranger, ids[2]) // listed twice: sent once
	w.deliver()
	before := store.commits.Load()
	reps, err := sender.SendGroup(withStranger, []byte("to the group"))
	if err != nil {
		t.Fatal(err)
	}
	commits := store.commits.Load() - before
	if len(reps) != 9 {
		t.Fatalf("%d reports for 9 members (the sender left out)", len(reps))
	}
	for i, r := range reps {
		if (i == 4) != r.DHFallback {
			t.Fatalf("report %d: DH fallback %v, want it only for the stranger (position 4)", i, r.DHFallback)
		}
	}
	if commits > 4 {
		t.Fatalf("a message to 9 members took %d commits, want the sends to share them", commits)
	}
	w.deliver()
	for _, m := range members {
		if got := w.received(m); !slices.Equal(got, []string{"to the group"}) {
			t.Fatalf("%s got %q", m.InstallationID(), got)
		}
	}
}
