package ratchetd_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// failingPublish is an in-memory transport (which does not confirm
// delivery) whose Publish fails while fail is set.
type failingPublish struct {
	*transport.Memory
	fail atomic.Bool
}

func (f *failingPublish) Publish(env *messages.Envelope) error {
	if f.fail.Load() {
		return errors.New("injected publish failure")
	}
	return f.Memory.Publish(env)
}

// TestNonConfirmingOutboxBacklog: with a transport that does not confirm
// delivery, sends whose Publish failed wait in the outbox; once the
// transport works again every one of them is published, however many (an
// outbox pass reads a few windows at a time and goes on until the end).
// (Found by review: only the first 1 024 left.)
func TestNonConfirmingOutboxBacklog(t *testing.T) {
	tr := &failingPublish{Memory: transport.NewMemory(transport.MemoryOptions{})}
	defer tr.Close()
	var mu sync.Mutex
	got := map[string]bool{}
	eng, err := ratchetd.Open(ratchetd.Options{Store: persistence.NewMemory(), Transport: tr, OutboxRetryInterval: 200 * time.Millisecond, Handler: func(m ratchetd.Message) {
		mu.Lock()
		got[string(m.Payload)] = true
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	alice, _ := eng.CreateAccount()
	bob, _ := eng.CreateAccount()
	for _, p := range [][2]*ratchetd.Account{{alice, bob}, {bob, alice}} {
		s, _ := p[1].ExportBundle()
		if err := p[0].ImportBundle(s); err != nil {
			t.Fatal(err)
		}
	}
	tr.fail.Store(true)
	const n = 1500
	for i := range n {
		alice.Send(bob.Identity(), []byte(fmt.Sprintf("m%d", i))) // accepted: kept in the outbox
	}
	if out, _, _ := eng.Pending(); out != n {
		t.Fatalf("outbox holds %d records after %d failed publishes", out, n)
	}
	tr.fail.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		out, _, _ := eng.Pending()
		if k == n && out == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox holds %d records; bob received %d of %d", out, k, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
