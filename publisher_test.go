package ratchetd_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// contactCodes returns the bundles published on identity's contact-code
// topic since mark, as lists of installation ids.
func (t *tap) contactCodes(identity keys.PublicKey, mark int) [][]string {
	topic := transport.ContactCodeTopic(identity)
	t.mu.Lock()
	defer t.mu.Unlock()
	var out [][]string
	for _, e := range t.sent[mark:] {
		if e.Topic != topic {
			continue
		}
		var pm messages.ProtocolMessage
		if proto.Unmarshal(e.Payload, &pm) != nil || len(pm.Bundles) != 1 {
			out = append(out, nil)
			continue
		}
		ids := []string{"from " + pm.InstallationId}
		for id := range pm.Bundles[0].SignedPreKeys {
			ids = append(ids, id)
		}
		out = append(out, ids)
	}
	return out
}

// An installation signs and publishes its bundle once when it starts, and
// again only when its paired devices change what the bundle says (a new
// signature and an envelope signature each time cost about 60 µs; an
// account per message in the x3dh benchmark paid them twice).
func TestBundlePublishedOncePerChange(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	id := newIdentity(t)
	mark := w.tap.mark()
	a := addDevice(t, w, id)
	if _, err := a.ExportBundle(); err != nil { // a round trip to the publisher
		t.Fatal(err)
	}
	if got := w.tap.contactCodes(a.Identity(), mark); len(got) != 1 || len(got[0]) != 2 {
		t.Fatalf("a new installation published %d contact codes (%v), want 1 with itself", len(got), got)
	}

	// A second device, approved: the bundle changes, and is published again.
	b := addDevice(t, w, id)
	pairUp(t, w, a, b)
	for _, d := range []*ratchetd.Account{a, b} { // both publishers done
		if _, err := d.ExportBundle(); err != nil {
			t.Fatal(err)
		}
	}
	got := w.tap.contactCodes(a.Identity(), mark)
	if last := got[len(got)-1]; len(last) != 3 {
		t.Fatalf("after pairing, the last contact code lists %v, want both devices", last)
	}

	// The paired device announces itself again, re-signed later (past
	// BundleResignInterval): a's record of it gets newer, but a's bundle
	// would not change, so a signs and publishes nothing.
	mark = w.tap.mark()
	w.clock.Advance(2 * time.Second)
	if err := b.AnnounceDevice(); err != nil {
		t.Fatal(err)
	}
	w.deliver()
	for _, d := range []*ratchetd.Account{a, b} {
		if _, err := d.ExportBundle(); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.tap.contactCodes(a.Identity(), mark); len(got) != 0 {
		t.Fatalf("an unchanged paired device caused %d contact codes (%v), want none (a %s, b %s)", len(got), got, a.InstallationID(), b.InstallationID())
	}
}

// A new installation's first message attaches the bundle its publisher
// signed and published when it started, even when the clock read for that
// send comes a little before the signature (the Installation reads the
// clock before its just-started publisher signs): a second signature per
// new account was about 2.5 % of the x3dh benchmark's CPU. A clock set back
// by more than BundleResignInterval still gets a new signature.
func TestFirstSendReusesStartBundle(t *testing.T) {
	w := newWorld(t, transport.Faults{}, nil)
	bob := w.account()
	mark := w.tap.mark()
	alice := w.account()
	if _, err := alice.ExportBundle(); err != nil { // alice's publisher has published
		t.Fatal(err)
	}
	introduce(t, alice, bob)
	var published int64
	topic := transport.ContactCodeTopic(alice.Identity())
	w.tap.mu.Lock()
	for _, e := range w.tap.sent[mark:] {
		var pm messages.ProtocolMessage
		if e.Topic == topic && proto.Unmarshal(e.Payload, &pm) == nil && len(pm.Bundles) == 1 {
			published = pm.Bundles[0].Timestamp
		}
	}
	w.tap.mu.Unlock()
	if published == 0 {
		t.Fatal("alice published no contact code")
	}
	attached := func() int64 {
		t.Helper()
		mark := w.tap.mark()
		mustSend(t, alice, bob, "hello")
		pms := w.tap.since(mark)
		if len(pms) != 1 || len(pms[0].Bundles) != 1 {
			t.Fatalf("a send published %d messages, want 1 with a bundle", len(pms))
		}
		return pms[0].Bundles[0].Timestamp
	}

	w.clock.Advance(-time.Millisecond)
	if got := attached(); got != published {
		t.Fatalf("first message attaches a bundle signed at %d, want the published one (%d)", got, published)
	}
	w.clock.Advance(-2 * time.Second) // BundleResignInterval is 1 s
	if got, want := attached(), w.clock.Now().UnixNano(); got != want {
		t.Fatalf("after the clock went back 2 s, the bundle is signed at %d, want a new signature at %d", got, want)
	}
}
