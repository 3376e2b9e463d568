package actors

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// downConfirm: a confirming memory transport whose recipients can be down.
type downConfirm struct {
	*transport.Memory
	mu   sync.Mutex
	down map[string]bool
}

func (n *downConfirm) PublishConfirm(env *messages.Envelope, done func(error)) {
	n.mu.Lock()
	d := n.down[string(env.Recipient)]
	n.mu.Unlock()
	if d {
		go done(errors.New("injected: down"))
		return
	}
	err := n.Memory.Publish(env)
	go done(err)
}

// TestReviewAdvertQueuedReport: an Advertise send on a confirming transport
// whose lane is failing waits in the outbox, and its report says so
// (Queued), as a send's does. Before, it said Queued 0 (review of 8dd1ddd).
func TestReviewAdvertQueuedReport(t *testing.T) {
	tr := &downConfirm{Memory: transport.NewMemory(transport.MemoryOptions{}), down: map[string]bool{}}
	defer tr.Close()
	e := NewEngine(Config{OutboxRetryInterval: time.Hour, MaxOutboxBackoff: time.Hour}, persistence.NewMemory(), tr, func(Message) {})
	defer e.Close()
	k, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := e.CreateInstallation(&k.Private)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	peer := pk.Public
	tr.mu.Lock()
	tr.down[string(peer[:])] = true
	tr.mu.Unlock()
	// First advert: published, fails; the lane is failing.
	res, err := e.Request(id, &messages.SendCommand{PeerIdentity: peer[:], Advertise: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first: %+v", res)
	time.Sleep(100 * time.Millisecond)
	res, err = e.Request(id, &messages.SendCommand{PeerIdentity: peer[:], Advertise: true})
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*messages.SendReport)
	t.Logf("second: %+v", r)
	ob, _, _ := e.Pending()
	t.Logf("outbox records: %d, adverts: %d", ob, e.Stats().Adverts)
	if r.Envelopes != 1 || r.Queued != 1 || ob != 2 {
		t.Fatalf("advert waits behind its failing lane (%d outbox records), report says Queued=%d (Envelopes=%d)", ob, r.Queued, r.Envelopes)
	}
}
