package actors

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// TestReviewAdvertRefusedDuringStopIsLost: 6f7b97f answers a bundle advert
// that reaches a stopping installation CLOSED ("not taken, and not marked
// seen, so that it is taken when offered again"). But nothing offers an
// advert again: installation.advertise publishes it with Transport.Publish,
// not through the confirming outbox (node.Publish: "nothing that must
// survive a loss"; the memory transport "does not deliver again"), and the
// advertiser is rate-limited for BundleAdvertInterval (2 h). So the
// outcome the commit set out to fix is unchanged: once the installation is
// hosted again and the transport has delivered everything it holds, its
// session with the advertiser is still not stale. TestReviewStopping-
// InstallationTakesAdvertAndDropsReset passes only because it checks the
// gateway's answer (an error now), not the advert's effect.
func TestReviewAdvertRefusedDuringStopIsLost(t *testing.T) {
	p := newReviewPair(t)
	defer p.close()
	e := p.e
	request := func(id string, msg any) any { return p.request(t, id, msg) }
	send := func(from string, to keys.PublicKey, payload string) { p.send(t, from, to, payload) }
	_, cID := p.third(t)
	send(p.a, p.bID, "a to b")
	send(p.a, cID, "a to c")
	p.tr.DropAll()
	request(p.b, &messages.SendCommand{PeerIdentity: p.aID[:], Advertise: true})
	env := p.tr.DropOne() // the transport hands it to a's handler (below)
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

	// As in TestReviewStoppingInstallationTakesAdvertAndDropsReset: a stops
	// slowly, and the advert's handler call reaches it meanwhile.
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
	go func() { delivered <- handler(d) }()
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
		t.Fatal("the advert's delivery was never answered")
	}

	// a is hosted again, and the transport delivers everything it holds.
	if _, err := e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.get(p.a); err != nil {
		t.Fatalf("a is not hosted again: %v", err)
	}
	held := p.tr.Pending()
	p.tr.DeliverAll(0)
	var rec messages.SessionRecord
	if err := proto.Unmarshal(p.sessionRecord(t), &rec); err != nil {
		t.Fatal(err)
	}
	t.Logf("the advert's delivery during the stop: %v; held by the transport after the stop: %d; a's session with b stale once hosted again: %v",
		dErr, held, rec.Stale)
	if !rec.Stale {
		t.Fatal("b's advert reached a while it stopped and was answered not taken, but nothing offers an advert again " +
			"(Transport.Publish, not the outbox; b is rate-limited for BundleAdvertInterval): a, hosted again, " +
			"still sends on the session b asked it to drop")
	}
}
