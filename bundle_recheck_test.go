package ratchetd_test

import (
	"encoding/base64"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// bundleRig is alice on a world's engine and bob, an identity whose device
// lives on the same engine, and whose bundles the test signs and attaches
// as a Status client does: re-signed with the current time on every send
// (status-compat.md §4.2).
type bundleRig struct {
	w     *world
	alice *ratchetd.Account
	bobID keys.KeyPair
	bob   *ratchetd.Account
	// entries are what bob's next bundle lists.
	entries []bundle.Entry
}

func newBundleRig(t *testing.T, recheck time.Duration) *bundleRig {
	t.Helper()
	r := &bundleRig{}
	r.w = newWorld(t, transport.Faults{}, func(o *ratchetd.Options) { o.BundleRecheckInterval = recheck })
	r.alice = r.w.account()
	id := newIdentity(t)
	kp, err := id.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	r.bobID = kp
	r.bob = addDevice(t, r.w, id)
	v, err := bundle.Verify(exportedBundle(t, r.bob))
	if err != nil {
		t.Fatal(err)
	}
	r.entries = v.Entries
	return r
}

// signed is bob's bundle of r.entries signed now (the world's clock, plus
// a nanosecond per call: every signature is new).
func (r *bundleRig) signed(t *testing.T) *messages.Bundle {
	t.Helper()
	r.w.clock.Advance(time.Nanosecond)
	v, err := bundle.Sign(r.bobID, r.entries, r.w.clock.Now().UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	return v.Proto()
}

// attach delivers b to alice in an envelope signed by bob's identity.
func (r *bundleRig) attach(t *testing.T, b *messages.Bundle) {
	t.Helper()
	injectTo(t, r.w, r.bobID.Private, r.alice.Identity(), &messages.ProtocolMessage{InstallationId: r.bob.InstallationID(), Bundles: []*messages.Bundle{b}})
}

// device is what alice knows of bob's device.
func (r *bundleRig) device(t *testing.T) ratchetd.Device {
	t.Helper()
	devs, err := r.alice.Devices(r.bobID.Public)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].InstallationID != r.bob.InstallationID() {
		t.Fatalf("alice knows %+v, want bob's one device", devs)
	}
	return devs[0]
}

// TestBundleRecheckInterval: a bundle that lists exactly the entries of
// the sender's last verified one, under a new signature, is not verified
// again within BundleRecheckInterval (a Status client re-signs on every
// send, so each of its messages cost a signature recovery more), and
// nothing of it is used. Any change of entries is verified at once; after
// the interval the same entries are verified again and their activity time
// recorded.
func TestBundleRecheckInterval(t *testing.T) {
	r := newBundleRig(t, time.Minute)
	stats := func() (verified, unchanged, bad int64) {
		s := r.w.eng.Stats()
		return s.BundlesVerified, s.BundlesUnchanged, s.BadBundles
	}
	expect := func(when string, v0, u0, b0, dv, du, db int64) {
		t.Helper()
		v, u, b := stats()
		if v-v0 != dv || u-u0 != du || b-b0 != db {
			t.Fatalf("%s: verified +%d, unchanged +%d, bad +%d; want +%d, +%d, +%d", when, v-v0, u-u0, b-b0, dv, du, db)
		}
	}

	first := r.signed(t)
	v0, u0, b0 := stats()
	r.attach(t, first)
	expect("the first bundle", v0, u0, b0, 1, 0, 0)
	seen := r.device(t).LastActive
	if seen.UnixNano() != first.Timestamp {
		t.Fatalf("bob last active %v, want the bundle's timestamp %v", seen, time.Unix(0, first.Timestamp))
	}

	// Twenty messages as a Status client sends them: the same entries,
	// a new signature each.
	r.w.clock.Advance(10 * time.Second)
	v0, u0, b0 = stats()
	for range 20 {
		r.attach(t, r.signed(t))
	}
	expect("20 re-signed bundles within the interval", v0, u0, b0, 0, 20, 0)
	if got := r.device(t).LastActive; !got.Equal(seen) {
		t.Fatalf("an unverified bundle moved bob's activity to %v", got)
	}

	// The same entries under a broken signature are taken for the
	// verified bundle as well: nothing of them is used.
	broken := r.signed(t)
	broken.Signature[9] ^= 0x20
	v0, u0, b0 = stats()
	r.attach(t, broken)
	expect("same entries, broken signature", v0, u0, b0, 0, 1, 0)

	// Any change of entries is verified at once: a forged one is refused,
	// a genuine rotation stored.
	rotated := append([]bundle.Entry(nil), r.entries...)
	rotated[0].Version++
	spk, err := newIdentity(t).Public()
	if err != nil {
		t.Fatal(err)
	}
	rotated[0].SignedPreKey = spk
	forged := r.signed(t)
	for _, spk := range forged.SignedPreKeys {
		spk.Version = rotated[0].Version
		spk.SignedPreKey = rotated[0].SignedPreKey[:]
	}
	v0, u0, b0 = stats()
	r.attach(t, forged)
	expect("changed entries under the old entries' signature", v0, u0, b0, 1, 0, 1)
	if r.device(t).Version != r.entries[0].Version {
		t.Fatal("a forged rotation was stored")
	}
	extra := r.signed(t)
	extra.SignedPreKeys["forged-device"] = proto.Clone(extra.SignedPreKeys[r.bob.InstallationID()]).(*messages.SignedPreKey)
	v0, u0, b0 = stats()
	r.attach(t, extra)
	expect("a device added without a signature", v0, u0, b0, 1, 0, 1)
	r.entries = rotated
	v0, u0, b0 = stats()
	r.attach(t, r.signed(t))
	expect("a signed rotation", v0, u0, b0, 1, 0, 0)
	if d := r.device(t); d.Version != rotated[0].Version {
		t.Fatalf("the rotation was not stored: bob's device is at version %d, want %d", d.Version, rotated[0].Version)
	}

	// Past the interval the same entries are verified again, and the
	// activity moves.
	r.w.clock.Advance(time.Minute)
	again := r.signed(t)
	v0, u0, b0 = stats()
	r.attach(t, again)
	expect("the same entries a minute later", v0, u0, b0, 1, 0, 0)
	if got := r.device(t).LastActive; got.UnixNano() != again.Timestamp {
		t.Fatalf("bob last active %v after a verified bundle, want %v", got, time.Unix(0, again.Timestamp))
	}
	v0, u0, b0 = stats()
	r.attach(t, r.signed(t))
	expect("and right after it", v0, u0, b0, 0, 1, 0)

	// A clock set back is no reason to skip: verified.
	r.w.clock.Advance(-time.Hour)
	v0, u0, b0 = stats()
	r.attach(t, r.signed(t))
	expect("with the clock set back", v0, u0, b0, 1, 0, 0)
}

// TestBundleRecheckOff: with a negative BundleRecheckInterval every new
// signature is verified, as Status does.
func TestBundleRecheckOff(t *testing.T) {
	r := newBundleRig(t, -1)
	r.attach(t, r.signed(t))
	before := r.w.eng.Stats()
	for range 5 {
		r.attach(t, r.signed(t))
	}
	after := r.w.eng.Stats()
	if v, u := after.BundlesVerified-before.BundlesVerified, after.BundlesUnchanged-before.BundlesUnchanged; v != 5 || u != 0 {
		t.Fatalf("5 re-signed bundles: %d verified, %d unchanged; want 5 and 0", v, u)
	}
}

// TestBundleRecheckAfterImport: the bundle alice imported when she met bob
// comes again attached to his first messages. It changes nothing, so it
// opens no window: only a newer bundle, applied, does. The imported one
// is still recognised by its signature. A later import closes the window.
func TestBundleRecheckAfterImport(t *testing.T) {
	r := newBundleRig(t, time.Minute)
	met := r.signed(t)
	if err := r.alice.ImportBundle(base64.RawURLEncoding.EncodeToString(mustMarshal(t, met))); err != nil {
		t.Fatal(err)
	}
	step := func(when string, b *messages.Bundle, verified, unchanged int64) {
		t.Helper()
		before := r.w.eng.Stats()
		r.attach(t, b)
		after := r.w.eng.Stats()
		if v, u := after.BundlesVerified-before.BundlesVerified, after.BundlesUnchanged-before.BundlesUnchanged; v != verified || u != unchanged {
			t.Fatalf("%s: %d verified, %d unchanged; want %d and %d", when, v, u, verified, unchanged)
		}
	}
	step("the imported bundle, attached", met, 1, 0)
	step("the imported bundle again", met, 0, 0)
	step("re-signed: no window yet", r.signed(t), 1, 0)
	step("re-signed after a newer one was applied", r.signed(t), 0, 1)
	// An import changes the registry outside bob's attached bundles: his
	// next one is verified again.
	if err := r.alice.ImportBundle(base64.RawURLEncoding.EncodeToString(mustMarshal(t, r.signed(t)))); err != nil {
		t.Fatal(err)
	}
	step("re-signed after an import", r.signed(t), 1, 0)
}
