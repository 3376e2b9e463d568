package actors

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
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
	dErr, answered := p.advertDuringStop(t)
	if !answered {
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
