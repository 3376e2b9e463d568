package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/messages"
)

// script plays the demo: each act is one flow of 5/SECURE-TRANSPORT, told
// as it happens on the wire.
func (w *world) script() error {
	for _, act := range []func() error{
		w.actIdentities, w.actX3DH, w.actLossyConversation, w.actConcurrentInitiation,
		w.actRestart, w.actRotation, w.actPartitionedDevice,
	} {
		if err := act(); err != nil {
			return err
		}
	}
	return w.actCheck()
}

func (w *world) actIdentities() error {
	w.act(1, "Identities and devices")
	if err := w.addIdentity("alice", "phone", "laptop", "tablet"); err != nil {
		return err
	}
	if err := w.addIdentity("bob", "phone"); err != nil {
		return err
	}
	if err := w.addIdentity("carol", "phone"); err != nil {
		return err
	}
	for _, id := range []string{"alice", "bob", "carol"} {
		var devs []string
		for _, d := range w.devicesOf(id) {
			devs = append(devs, fmt.Sprintf("%s (installation %s…)", strings.TrimPrefix(d, id+"/"), w.devices[d].InstallationID()[:8]))
		}
		w.printf("%-6s identity %s, %s", id, short(w.identities[id].Public.Bytes()), strings.Join(devs, ", "))
	}
	w.printf("alice's three devices announce themselves to each other (their bundles, on alice's own topic)…")
	alice := w.devicesOf("alice")
	for _, d := range alice {
		if err := w.devices[d].AnnounceDevice(); err != nil {
			return fmt.Errorf("demo: announce %s: %w", d, err)
		}
	}
	w.deliver(0)
	for _, d := range alice {
		for _, o := range alice {
			if d == o {
				continue
			}
			if err := w.devices[d].ApproveDevice(w.identities["alice"].Public, w.devices[o].InstallationID()); err != nil {
				return fmt.Errorf("demo: %s approves %s: %w", d, o, err)
			}
		}
	}
	w.printf("…and each approves the others (pairing needs an explicit approval, status-compat.md §9):")
	w.printf("every message from one of alice's devices is now also encrypted for the other two, and her bundle lists all three")
	return nil
}

func (w *world) actX3DH() error {
	w.act(2, "X3DH: alice meets bob")
	code, err := w.devices["bob/phone"].ExportBundle()
	if err != nil {
		return fmt.Errorf("demo: export bob's bundle: %w", err)
	}
	if err := w.devices["alice/phone"].ImportBundle(code); err != nil {
		return fmt.Errorf("demo: import bob's bundle: %w", err)
	}
	w.printf("bob/phone shows its bundle as a QR code (%d characters); alice/phone scans it: signature verified, bob's prekey stored", len(code))
	if _, err := w.send("alice/phone", "bob", "Hi Bob, it's Alice."); err != nil {
		return err
	}
	w.deliver(0)
	w.printf("bob learnt alice's bundle from that message (it is attached to every message), with her three devices:")
	if _, err := w.send("bob/phone", "alice", "Hi Alice! Good to hear from you."); err != nil {
		return err
	}
	w.deliver(0)
	w.printf("bob's reply confirmed the session: alice/phone's next message to bob carries no X3DH header")
	if _, err := w.send("alice/phone", "bob", "Shall we plan the trip?"); err != nil {
		return err
	}
	w.deliver(0)
	return nil
}

func (w *world) actLossyConversation() error {
	w.act(3, "A conversation over a network that reorders, duplicates and loses")
	w.printf("envelopes are delivered a few at a time, in an order the seeded network picks; two are lost")
	lines := []struct{ from, to, text string }{
		{"alice/phone", "bob", "How was Norway?"},
		{"alice/phone", "bob", "Did you see the northern lights?"},
		{"bob/phone", "alice", "Amazing."},
		{"bob/phone", "alice", "Green skies three nights in a row."},
		{"bob/phone", "alice", "Photos are coming."},
		{"alice/laptop", "bob", "Send them here too, the laptop screen is bigger."},
		{"alice/tablet", "bob", "(from the tablet) Can't wait!"},
		{"bob/phone", "alice", "Sent."},
		{"alice/phone", "bob", "Got them. Wow."},
		{"bob/phone", "alice", "Next year you come along."},
	}
	for i, l := range lines {
		if _, err := w.send(l.from, l.to, l.text); err != nil {
			return err
		}
		switch i {
		case 1, 6:
			w.drop()
		case 3, 5, 8:
			w.deliver(w.mem.Pending() / 2)
		}
	}
	w.deliver(0)
	return w.resend("the network lost")
}

// resend re-sends every message a target never received. The engine does
// not retransmit (Status has no acknowledgements at this layer); the
// application notices the gap — here by comparing with the ledger, in an
// app by a timeout on a read receipt — and sends the text again as a new
// message on the current ratchet state. Devices that already had it drop
// the second copy by its id.
func (w *world) resend(why string) error {
	miss := w.missing()
	if len(miss) == 0 {
		return nil
	}
	ls := make([]*logical, 0, len(miss))
	for l := range miss {
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(a, b *logical) int { return a.id - b.id })
	w.printf("%s: after the network drained, %d message(s) had not reached every device:", why, len(ls))
	for _, l := range ls {
		w.printf("  #%d missing on %s — %s sends it again", l.id, strings.Join(miss[l], ", "), l.from)
		if _, err := w.transmit(l, " (re-sent)"); err != nil {
			return err
		}
		w.resent++
		w.resentIDs[l.id] = true
	}
	w.deliver(0)
	return nil
}

func (w *world) actConcurrentInitiation() error {
	w.act(4, "Concurrent initiation: alice and carol start a session at the same time")
	for _, p := range [][2]string{{"alice/phone", "carol/phone"}, {"carol/phone", "alice/phone"}} {
		code, err := w.devices[p[1]].ExportBundle()
		if err != nil {
			return fmt.Errorf("demo: export %s: %w", p[1], err)
		}
		if err := w.devices[p[0]].ImportBundle(code); err != nil {
			return fmt.Errorf("demo: import into %s: %w", p[0], err)
		}
	}
	w.printf("they swapped bundles; both send before either message arrives, so both run X3DH:")
	if _, err := w.send("alice/phone", "carol", "Carol! Coffee tomorrow?"); err != nil {
		return err
	}
	if _, err := w.send("carol/phone", "alice", "Alice! I was about to write to you."); err != nil {
		return err
	}
	w.deliver(0)
	w.printf("each side now holds two sessions; both pick the one whose key comes first in byte order:")
	mark := w.tap.mark()
	if _, err := w.send("alice/phone", "carol", "Ten o'clock?"); err != nil {
		return err
	}
	if _, err := w.send("carol/phone", "alice", "Ten is perfect."); err != nil {
		return err
	}
	sent := w.tap.since(mark)
	a := sessionFor(sent, w.devices["carol/phone"].InstallationID())
	c := sessionFor(sent, w.devices["alice/phone"].InstallationID())
	if a != nil && bytes.Equal(a, c) {
		w.printf("  both now send on session %s: converged within one round trip", short(a))
	} else {
		w.printf("  alice sends on %s, carol on %s: not converged yet (both still decrypt)", short(a), short(c))
	}
	w.deliver(0)
	return nil
}

// sessionFor is the DR bundle id of the first entry for an installation.
func sessionFor(pms []*messages.ProtocolMessage, installation string) []byte {
	return entryFor(pms, installation).GetDrHeader().GetId()
}

func (w *world) actRestart() error {
	w.act(5, "The engine restarts")
	mark := w.tap.mark()
	if _, err := w.send("alice/phone", "bob", "Are you still there?"); err != nil {
		return err
	}
	before := sessionFor(w.tap.since(mark), w.devices["bob/phone"].InstallationID())
	w.deliver(0)
	w.printf("the engine closes (every actor stops, Badger closes) and a new one opens on %s…", w.dir)
	n, err := w.restart()
	if err != nil {
		return err
	}
	w.printf("…and loads its %d installations from the store (Engine.Accounts); the transport, the network, kept running", n)
	mark = w.tap.mark()
	if _, err := w.send("bob/phone", "alice", "Still here: my phone rebooted, the conversation did not."); err != nil {
		return err
	}
	w.deliver(0)
	if _, err := w.send("alice/phone", "bob", "Good, same session as before."); err != nil {
		return err
	}
	after := sessionFor(w.tap.since(mark), w.devices["bob/phone"].InstallationID())
	if before != nil && bytes.Equal(before, after) {
		w.printf("  alice/phone → bob/phone continues on session %s with no new X3DH: the ratchet state came back from Badger", short(after))
	}
	w.deliver(0)
	return nil
}

func (w *world) actRotation() error {
	w.act(6, "Bob rotates his signed prekey")
	bob := w.devices["bob/phone"]
	v0, _, err := ownPreKey(bob)
	if err != nil {
		return err
	}
	if err := bob.RotatePreKey(); err != nil {
		return fmt.Errorf("demo: rotate: %w", err)
	}
	v1, spk, err := ownPreKey(bob)
	if err != nil {
		return err
	}
	w.printf("bob/phone's bundle goes from version %d to %d, prekey %s (the old private prekey is kept for late X3DH messages)", v0, v1, short(spk))
	alicePhone, bobPhone := w.devices["alice/phone"].InstallationID(), bob.InstallationID()
	mark := w.tap.mark()
	if _, err := w.send("bob/phone", "alice", "New prekey, same me."); err != nil {
		return err
	}
	if e := entryFor(w.tap.since(mark), alicePhone); e.GetX3DhHeader() != nil {
		w.printf("  bob/phone opened a fresh session to alice/phone (X3DH to her prekey): the session that rested on his old prekey")
		w.printf("  is no longer used for sending, as Status does after a re-key (status-compat.md §16.6)")
	}
	w.deliver(0)
	mark = w.tap.mark()
	if _, err := w.send("alice/phone", "bob", "Noted, new session."); err != nil {
		return err
	}
	switch e := entryFor(w.tap.since(mark), bobPhone); {
	case e.GetX3DhHeader() != nil && bytes.Equal(e.GetX3DhHeader().GetId(), spk):
		w.printf("  alice/phone stored bundle v%d with bob's message and runs a fresh X3DH against the new prekey", v1)
	case e.GetX3DhHeader() == nil && e.GetDrHeader() != nil:
		w.printf("  alice/phone stored bundle v%d with bob's message and answers on the session bob opened: no X3DH header", v1)
	}
	w.deliver(0)
	if _, err := w.send("bob/phone", "alice", "Confirmed."); err != nil {
		return err
	}
	w.deliver(0)
	return nil
}

// entryFor is the first published entry for an installation.
func entryFor(pms []*messages.ProtocolMessage, installation string) *messages.EncryptedMessageProtocol {
	for _, pm := range pms {
		if e := pm.EncryptedMessage[installation]; e != nil {
			return e
		}
	}
	return nil
}

// ownPreKey reads an installation's current prekey (version and key) from
// its exported bundle.
func ownPreKey(a *ratchetd.Account) (uint32, []byte, error) {
	installation := a.InstallationID()
	s, err := a.ExportBundle()
	if err != nil {
		return 0, nil, fmt.Errorf("demo: export bundle: %w", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, nil, fmt.Errorf("demo: bundle: %w", err)
	}
	var b messages.Bundle
	if err := proto.Unmarshal(raw, &b); err != nil {
		return 0, nil, fmt.Errorf("demo: bundle: %w", err)
	}
	spk := b.SignedPreKeys[installation]
	if spk == nil {
		return 0, nil, fmt.Errorf("demo: bundle without installation %s", installation)
	}
	return spk.Version, spk.SignedPreKey, nil
}

func (w *world) actPartitionedDevice() error {
	w.act(7, "A device alice does not know yet")
	if _, err := w.addDevice("bob", "desktop"); err != nil {
		return err
	}
	w.printf("bob installs ratchetd on his desktop: a new installation of his identity (%s…); alice has never seen it", w.devices["bob/desktop"].InstallationID()[:8])
	adverts := w.stats().Adverts
	if _, err := w.send("alice/phone", "bob", "Bob, are you at your desk?"); err != nil {
		return err
	}
	w.deliver(0)
	if d := w.stats().Adverts - adverts; d > 0 {
		w.printf("bob/desktop got an envelope for bob with no entry for itself: it answered with its bundle (%d advert), automatically", d)
	}
	w.printf("alice's devices stored bob's new device with that answer; the next message includes it:")
	if _, err := w.send("alice/phone", "bob", "Now both of your devices get this."); err != nil {
		return err
	}
	w.deliver(0)
	return nil
}

// actCheck delivers what is left and re-sends what is still missing, in a
// few rounds at most; what remains after them is reported as undelivered.
func (w *world) actCheck() error {
	w.act(8, "Accounting")
	w.deliver(0)
	for round := 0; round < 3 && len(w.missing()) > 0; round++ {
		if err := w.resend("still missing"); err != nil {
			return err
		}
	}
	delivered, expected := w.tally()
	w.printf("%d messages, %d sends (%d re-sends); %d of %d addressed deliveries arrived", len(w.ledger), w.sends(), w.resent, delivered, expected)
	for _, l := range w.lost {
		if w.resentIDs[l.id] {
			w.printf("lost in transit: %s — found missing and re-sent by the application", l.desc)
		} else {
			w.printf("lost in transit: %s — no addressed device missed it (the lost copy was the sender's own echo, or the network had duplicated the envelope)", l.desc)
		}
	}
	return nil
}

func (w *world) sends() int {
	n := 0
	for _, l := range w.ledger {
		n += l.sends
	}
	return n
}
