package actors

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
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
	// As in TestReviewStoppingInstallationTakesAdvertAndDropsReset: a stops
	// slowly, and the advert's handler call reaches it meanwhile.
	dErr, answered := p.advertDuringStop(t)
	if !answered {
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
