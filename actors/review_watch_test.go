package actors

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// TestReviewStoppingInstallationTakesAdvertAndDropsReset: a bundle advert
// (an empty DH message: the peer lost the sessions we send on) that reaches
// an installation while it stops is answered Processed (taken), but the
// ResetSending it causes goes to children.forward of a closed registry,
// which drops a request without a sender (refuseClosed answers only
// encrypts and decrypts). The session with the peer is never marked stale:
// once hosted again, the installation keeps sending on a session the peer
// no longer has, and the peer, which advertised once, does not advertise
// again for BundleAdvertInterval (2 h): what it receives meanwhile is
// undecryptable and taken as such.
func TestReviewStoppingInstallationTakesAdvertAndDropsReset(t *testing.T) {
	p := newReviewPair(t)
	defer p.close()
	e := p.e
	request := func(id string, msg any) any { return p.request(t, id, msg) }
	send := func(from string, to keys.PublicKey, payload string) { p.send(t, from, to, payload) }
	_, cID := p.third(t)
	// a sends to b on a session it made; a has a supervisor for c too.
	send(p.a, p.bID, "a to b")
	send(p.a, cID, "a to c")
	p.tr.DropAll()
	// b's bundle advert to a (what b sends once it cannot decrypt a's
	// messages), in the transport.
	request(p.b, &messages.SendCommand{PeerIdentity: p.aID[:], Advertise: true})
	env := p.tr.DropOne()
	if env == nil {
		t.Fatal("b's advert is not in the transport")
	}
	d, err := transport.Open(env, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.get(p.a)
	if err != nil {
		t.Fatal(err)
	}
	handler := e.gateway(h.pid)

	// a's session with c is in a slow commit, so a stops slowly; its
	// supervisor for b (idle) terminates at once.
	p.store.armed.Store(true)
	go func() { _, _ = e.Request(p.a, &messages.SendCommand{PeerIdentity: cID[:], Payload: []byte("slow")}) }()
	select {
	case <-p.store.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the send to c never reached the store")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- e.StopInstallation(p.a) }()
	time.Sleep(200 * time.Millisecond)
	delivered := make(chan error, 1)
	go func() { delivered <- handler(d) }() // a handler call under way when the stop began
	time.Sleep(200 * time.Millisecond)
	p.store.armed.Store(false)
	close(p.store.gate)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("StopInstallation: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("StopInstallation never returned")
	}
	var dErr error
	select {
	case dErr = <-delivered:
	case <-time.After(15 * time.Second):
		dErr = errors.New("no answer")
	}
	var rec messages.SessionRecord
	if err := proto.Unmarshal(p.sessionRecord(t), &rec); err != nil {
		t.Fatal(err)
	}
	t.Logf("the advert's delivery: %v; a's session with b stale: %v", dErr, rec.Stale)
	if dErr == nil && !rec.Stale {
		t.Fatal("b's advert reached a while it stopped and was taken (the transport acknowledges it; b does not send it again), " +
			"but a's session with b is not marked stale: the ResetSending was dropped by the closed supervisors registry, " +
			"and a keeps sending on a session b no longer has")
	}
}
