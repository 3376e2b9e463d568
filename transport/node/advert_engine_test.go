package node_test

import (
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
)

// TestAdvertWaitsForDownNode: bob2, a new installation of bob's identity on
// a node of its own, announces itself (AnnounceDevice) while the node of
// bob1, his other installation, is down. The advert stays in bob2's outbox
// (the down node is still one of the topic's, so it is not confirmed), and
// reaches bob1 once his node is back on its address.
func TestAdvertWaitsForDownNode(t *testing.T) {
	b := startHost(t, "127.0.0.1:0", nil)
	c := startHost(t, "127.0.0.1:0", nil, b.addr)
	defer c.down()
	bobKey, bob1, bob2 := oneIdentityTwoHosts(t, b, c)
	waitFor(t, "the nodes to learn each other's topics", func() bool {
		return b.node.Stats().PeerTopics[c.addr] >= 1 && c.node.Stats().PeerTopics[b.addr] >= 1
	})

	b.down()
	if err := bob2.AnnounceDevice(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if out, _, err := c.eng.Pending(); err != nil || out != 1 {
		t.Fatalf("bob2's outbox holds %d (%v) while bob1's node is down, want its advert", out, err)
	}

	b.up()
	defer b.down()
	bob1, err := b.eng.Account(bob1.InstallationID())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob1 to learn of bob2", func() bool {
		ds, err := bob1.Devices(bobKey.Public)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(ds, func(d ratchetd.Device) bool { return d.InstallationID == bob2.InstallationID() })
	})
	waitFor(t, "bob2's outbox to empty", func() bool {
		out, _, err := c.eng.Pending()
		return err == nil && out == 0
	})
}

// oneIdentityTwoHosts makes a new identity with an installation on each of
// two hosts.
func oneIdentityTwoHosts(t *testing.T, b, c *host) (keys.KeyPair, *ratchetd.Account, *ratchetd.Account) {
	t.Helper()
	k, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var accts [2]*ratchetd.Account
	for i, h := range []*host{b, c} {
		if accts[i], err = h.eng.AddInstallation(k.Private); err != nil {
			t.Fatal(err)
		}
	}
	return k, accts[0], accts[1]
}
