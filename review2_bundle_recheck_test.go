package ratchetd_test

import (
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/messages"
)

// TestReview2BundleHistoryBurstLagsActivity: no attacker. Alice was offline
// and fetches bob's messages of the last hour from a store node: they are
// processed within a second of local time. The oldest one's bundle is
// applied and opens the BundleRecheckInterval window (local clock); every
// later one, up to bob's newest bundle, lists the same entries and is
// skipped. Bob's activity stays at his oldest fetched message: an hour
// behind his newest genuine bundle, not "at most BundleRecheckInterval",
// until bob sends again.
func TestReview2BundleHistoryBurstLagsActivity(t *testing.T) {
	r := newBundleRig(t, time.Minute)
	var history []*messages.Bundle
	for range 6 { // one message every 10 minutes, while alice is offline
		history = append(history, r.signed(t))
		r.w.clock.Advance(10 * time.Minute)
	}
	for _, b := range history { // the fetched history, oldest first, in a burst
		r.attach(t, b)
	}
	newest := time.Unix(0, history[len(history)-1].Timestamp)
	got := r.device(t).LastActive
	t.Logf("bundles verified %d, unchanged %d", r.w.eng.Stats().BundlesVerified, r.w.eng.Stats().BundlesUnchanged)
	if lag := newest.Sub(got); lag > time.Minute {
		t.Fatalf("bob's newest bundle is of %v; alice records him last active %v: %v behind, more than BundleRecheckInterval", newest, got, lag)
	}
}

// TestReview2BundleHistoryBurstSteersSelection: the same lag decides which of
// bob's devices alice sends to (MaxInstallations 1). Bob has two unpaired
// devices (bundles {d1}, {d2}). Alice got d2's message live an hour ago;
// d1's messages of before and after it were missed and are fetched
// together from a store node now. d1 is the device bob used last, but only
// its oldest fetched bundle is applied: alice keeps sending to d2.
func TestReview2BundleHistoryBurstSteersSelection(t *testing.T) {
	w, alice, kp, d1, d2, e1, e2 := twoUnpairedDevices(t)
	signed := func(entries []bundle.Entry, at time.Time) *messages.Bundle {
		v, err := bundle.Sign(kp, entries, at.UnixNano())
		if err != nil {
			t.Fatal(err)
		}
		return v.Proto()
	}
	send := func(from *ratchetd.Account, b *messages.Bundle) {
		injectTo(t, w, kp.Private, alice.Identity(), &messages.ProtocolMessage{InstallationId: from.InstallationID(), Bundles: []*messages.Bundle{b}})
	}
	t0 := w.clock.Now()
	oldD1 := signed(e1, t0) // missed by alice
	w.clock.Advance(30 * time.Minute)
	send(d2, signed(e2, w.clock.Now())) // received live
	w.clock.Advance(30 * time.Minute)
	newD1 := signed(e1, w.clock.Now()) // missed by alice
	w.clock.Advance(time.Second)
	send(d1, oldD1) // the store node's answer, in a burst
	send(d1, newD1)
	if got := sentTo(t, alice, kp.Public); len(got) != 1 || got[0] != d1.InstallationID() {
		t.Fatalf("alice sent to %v; want d1 %s (bob's last device, 30 min after d2 %s)", got, d1.InstallationID(), d2.InstallationID())
	}
}
