package node_test

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/transport/node"
)

// TestReviewOwnEchoConfirmsPairedCopy: a send makes a second envelope, a
// copy for the sender's own paired installations, addressed to the
// sender's own identity on its own partitioned topic. The sending
// installation subscribes to that topic on its own node, so PublishConfirm
// dispatches the copy to it; the installation answers its own echo
// Processed{} ("our own message, echoed": installation.receive), which
// the node counts as "taken by its recipient" (subscription.go outcomeOf:
// nil is taken). So when the paired device's node is not among the
// subscribers the sender's node knows (here it hosts nothing for a while:
// a restart whose engine has not subscribed yet; equally a sender's node
// that restarted while it was down), the sender itself confirms the copy:
// the outbox deletes it, and the paired device never gets it. This is
// d3ecde7's bug (a subscriber that is not the recipient confirms for it)
// with the sender's own echo as the partition-mate.
func TestReviewOwnEchoConfirmsPairedCopy(t *testing.T) {
	a := startHost(t, "127.0.0.1:0", nil)
	defer func() { a.down() }()
	c := startHost(t, "127.0.0.1:0", nil, a.addr)

	kp, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	alice1, err := a.eng.AddInstallation(kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	alice2, err := c.eng.AddInstallation(kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := a.eng.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, alice1, bob)
	exchange(t, alice1, alice2)
	if err := alice1.ApproveDevice(alice1.Identity(), alice2.InstallationID()); err != nil {
		t.Fatal(err)
	}
	if err := alice2.ApproveDevice(alice2.Identity(), alice1.InstallationID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's node to learn c's topics", func() bool { return a.node.Stats().PeerTopics[c.addr] >= 2 })
	if _, err := alice1.Send(bob.Identity(), []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice2 to receive the copy of the first send", func() bool { return len(c.received()) == 1 })

	// alice2's node is replaced by one that hosts nothing yet (a restart
	// whose engine has not subscribed): a's node learns that none of
	// alice2's topics has a subscriber there.
	c.down()
	stub, err := node.Start(node.Options{Listen: c.addr, Peers: []string{a.addr}, HelloInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's node to learn that c hosts nothing", func() bool { return a.node.Stats().PeerTopics[c.addr] == 0 })
	const n = 3
	for i := range n {
		if _, err := alice1.Send(bob.Identity(), fmt.Appendf(nil, "while alice2 is away %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "bob to receive the sends", func() bool { return len(a.received()) >= n+1 })
	time.Sleep(time.Second)
	drained, _, _ := a.eng.Pending()

	// alice2 is back on its address, with its store: what alice1's outbox
	// still holds for it goes out (news of its topics wakes the lane).
	stub.Close()
	c.up()
	defer c.down()
	for deadline := time.Now().Add(8 * time.Second); len(c.received()) < n+1 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	got := len(c.received()) - 1
	out, _, _ := a.eng.Pending()
	t.Logf("alice1's outbox while alice2 was away: %d records; alice2 received %d of %d copies; outbox now %d", drained, got, n, out)
	if got < n {
		t.Fatalf("alice2 received %d of the %d copies sent while its node hosted nothing, and alice1's outbox holds %d: "+
			"alice1's own echo (Processed{}, taken) confirmed the copies addressed to her paired device", got, n, out)
	}
}
