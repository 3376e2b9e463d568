package node_test

import (
	"fmt"
	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"slices"
	"testing"
	"time"
)

// TestWarmUpWaitsForEveryPeer: alice's node restarts while the node of
// bob2, one of bob's two devices, is still down; it has heard bob1's node,
// and alice sends. Confirmation is per identity, so without the WarmUp
// bob1's node confirms the envelope alone and bob2, back 200 ms later,
// never gets it. With it, the node holds the envelope for the WarmUp, by
// when bob2's node has greeted it, and both devices get it.
func TestWarmUpWaitsForEveryPeer(t *testing.T) {
	for _, warm := range []time.Duration{5 * time.Second, -1} {
		t.Run(fmt.Sprint("warmUp=", warm), func(t *testing.T) {
			got := warmUpRestart(t, warm, true)
			switch {
			case warm > 0 && !got:
				t.Fatal("bob2 never got the message: bob1's node confirmed it alone")
			case warm < 0 && got:
				t.Fatal("without the WarmUp bob2 got it all the same: this test shows nothing")
			}
		})
	}
}

// warmUpRestart runs the schedule of TestWarmUpWaitsForEveryPeer, with
// alice's restarted node listing bob's nodes as its Peers (configured) or
// not (they list hers), and reports whether bob2 got the message.
func warmUpRestart(t *testing.T, warm time.Duration, configured bool) bool {
	a := startHost(t, "127.0.0.1:0", nil)
	b := startHost(t, "127.0.0.1:0", nil, a.addr)
	defer b.down()
	c := startHost(t, "127.0.0.1:0", nil, a.addr, b.addr)
	alice, bobKey := aliceMeetsTwoDevices(t, a, b, c)
	waitFor(t, "alice's node to learn both of bob's nodes", func() bool {
		return a.node.Stats().PeerTopics[b.addr] >= 1 && a.node.Stats().PeerTopics[c.addr] >= 1
	})
	if _, err := alice.Send(bobKey.Public, []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both devices to receive", func() bool { return len(b.received()) == 1 && len(c.received()) == 1 })

	c.down()
	a.down()
	a.warmUp = warm
	if configured {
		a.peers = []string{b.addr, c.addr}
	}
	a.up()
	defer a.down()
	alice, err := a.eng.Account(alice.InstallationID())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's restarted node to hear bob1's", func() bool { return a.node.Stats().PeerTopics[b.addr] >= 1 })
	if _, err := alice.Send(bobKey.Public, []byte("during")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	back := time.Now()
	c.up()
	defer c.down()
	waitFor(t, "bob1 to receive", func() bool { return slices.Contains(b.received(), "during") })
	t.Logf("bob1 got it %v after bob2's node started", time.Since(back).Round(time.Millisecond))
	deadline := back.Add(max(3*time.Second, warm+time.Second))
	for !slices.Contains(c.received(), "during") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := slices.Contains(c.received(), "during")
	t.Logf("warmUp %v: bob2 got the message sent while its node was down: %v (%v after its node started)", warm, got, time.Since(back).Round(time.Millisecond))
	return got
}

// aliceMeetsTwoDevices makes alice on a and bob with one installation on b
// and one on c, and gives alice both of bob's bundles.
func aliceMeetsTwoDevices(t *testing.T, a, b, c *host) (*ratchetd.Account, keys.KeyPair) {
	t.Helper()
	alice, err := a.eng.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	bobKey, bob1, bob2 := oneIdentityTwoHosts(t, b, c)
	for _, d := range []*ratchetd.Account{bob1, bob2} {
		s, err := d.ExportBundle()
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.ImportBundle(s); err != nil {
			t.Fatal(err)
		}
	}
	return alice, bobKey
}
