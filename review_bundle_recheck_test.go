package ratchetd_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

func reviewPublish(t *testing.T, w *world, env *messages.Envelope) {
	t.Helper()
	if err := w.mem.Publish(proto.Clone(env).(*messages.Envelope)); err != nil {
		t.Fatal(err)
	}
	w.deliver()
}

// TestReviewBundleReplayFreezesActivity: an eavesdropper who kept two old
// envelopes of bob's (any from the last 24 h: same entries, Status rotates
// daily; two, because one with the cached signature is ignored) replays
// one of them, alternately, once a minute. The replayed bundle is genuine and
// verifies, so it opens a new BundleRecheckInterval window although
// storeBundle applied nothing of it (older timestamp); every genuine
// bundle bob sends inside that window is then skipped. Bob's activity is
// frozen for as long as the attacker keeps replaying, not "at most the
// interval" behind. Before 1d52601 each genuine bundle (new signature) was
// verified and recorded.
func TestReviewBundleReplayFreezesActivity(t *testing.T) {
	r := newBundleRig(t, time.Minute)
	var olds []*messages.Envelope
	for range 2 {
		old := r.signed(t)
		olds = append(olds, sealedTo(t, r.bobID.Private, r.alice.Identity(), &messages.ProtocolMessage{InstallationId: r.bob.InstallationID(), Bundles: []*messages.Bundle{old}}))
		reviewPublish(t, r.w, olds[len(olds)-1])
	}
	var last *messages.Bundle
	for i := range 10 {
		r.w.clock.Advance(time.Minute + time.Second)
		reviewPublish(t, r.w, olds[i%2]) // the attacker, first after the window closed
		for range 5 {                    // bob chats
			r.w.clock.Advance(5 * time.Second)
			last = r.signed(t)
			r.attach(t, last)
		}
	}
	got := r.device(t).LastActive
	lag := time.Unix(0, last.Timestamp).Sub(got)
	t.Logf("bundles verified %d, unchanged %d", r.w.eng.Stats().BundlesVerified, r.w.eng.Stats().BundlesUnchanged)
	if lag > time.Minute {
		t.Fatalf("bob was last active at %v (his last bundle); alice records %v: %v behind, more than BundleRecheckInterval", time.Unix(0, last.Timestamp), got, lag)
	}
}

// twoUnpairedDevices is a world (MaxInstallations 1, the recheck on) with
// alice, and bob's identity kp with two unpaired devices d1 and d2 on it,
// whose bundles list e1 and e2: each device's own entry.
func twoUnpairedDevices(t *testing.T) (w *world, alice *ratchetd.Account, kp keys.KeyPair, d1, d2 *ratchetd.Account, e1, e2 []bundle.Entry) {
	t.Helper()
	w = newWorld(t, transport.Faults{}, func(o *ratchetd.Options) {
		o.BundleRecheckInterval = time.Minute
		o.Limits.MaxInstallations = 1
	})
	alice = w.account()
	id := newIdentity(t)
	kp, err := id.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 = addDevice(t, w, id), addDevice(t, w, id)
	own := func(a *ratchetd.Account) []bundle.Entry {
		v, err := bundle.Verify(exportedBundle(t, a))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range v.Entries {
			if e.InstallationID == a.InstallationID() {
				return []bundle.Entry{e}
			}
		}
		t.Fatal("no own entry")
		return nil
	}
	return w, alice, kp, d1, d2, own(d1), own(d2)
}

// TestReviewBundleReplaySteersSelection: the same replay decides which of
// bob's devices alice sends to. Bob has two unpaired devices (own bundles
// {d1}, {d2}); alice sends to the MaxInstallations (here 1) most recently
// active. d1 is the one bob uses; d2 sent one message a while ago. The
// attacker replays an old d1 envelope right after d2's message: d1's
// genuine bundles are then skipped and alice keeps sending to d2 only.
func TestReviewBundleReplaySteersSelection(t *testing.T) {
	w, alice, kp, d1, d2, e1, e2 := twoUnpairedDevices(t)
	signed := func(entries []bundle.Entry) *messages.Bundle {
		w.clock.Advance(time.Nanosecond)
		v, err := bundle.Sign(kp, entries, w.clock.Now().UnixNano())
		if err != nil {
			t.Fatal(err)
		}
		return v.Proto()
	}
	env := func(from *ratchetd.Account, b *messages.Bundle) *messages.Envelope {
		return sealedTo(t, kp.Private, alice.Identity(), &messages.ProtocolMessage{InstallationId: from.InstallationID(), Bundles: []*messages.Bundle{b}})
	}

	// d1 talks; the attacker keeps one of its envelopes.
	oldD1 := env(d1, signed(e1))
	reviewPublish(t, w, oldD1)
	w.clock.Advance(10 * time.Second)
	// d2 sends once.
	reviewPublish(t, w, env(d2, signed(e2)))
	// The attacker replays d1's old envelope (verified: the entries differ
	// from d2's; stores nothing: older timestamp).
	reviewPublish(t, w, oldD1)
	// Bob keeps using d1.
	for range 5 {
		w.clock.Advance(2 * time.Second)
		reviewPublish(t, w, env(d1, signed(e1)))
	}
	if got := sentTo(t, alice, kp.Public); len(got) != 1 || got[0] != d1.InstallationID() {
		t.Fatalf("alice sent to %v; want d1 %s (the device bob used last, 10 s after d2 %s)", got, d1.InstallationID(), d2.InstallationID())
	}
}

// sentTo logs what alice knows of peer's devices, sends to peer and
// returns the installations the send addressed.
func sentTo(t *testing.T, alice *ratchetd.Account, peer keys.PublicKey) []string {
	t.Helper()
	devs, _ := alice.Devices(peer)
	for _, d := range devs {
		t.Logf("alice knows %s last active %v", d.InstallationID, d.LastActive)
	}
	rep, err := alice.Send(peer, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	return rep.Installations
}
