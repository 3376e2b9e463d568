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
