package actors

import (
	"fmt"
	"testing"

	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// Writes queued without waiting (an inbox deletion, registry activity) just
// before Engine.Close are written: Close poisons the Committer last, and the
// Committer's Flush note for them is behind the poison.
// memoryEngine is an engine on an in-memory store and transport; the
// transport is closed after the test.
func memoryEngine(t *testing.T) (*Engine, *persistence.Memory) {
	t.Helper()
	store := persistence.NewMemory()
	tr := transport.NewMemory(transport.MemoryOptions{})
	t.Cleanup(func() { tr.Close() })
	return NewEngine(Config{}, store, tr, func(Message) {}), store
}

func TestCloseWritesQueuedCommits(t *testing.T) {
	e, store := memoryEngine(t)
	const n = 50
	for i := range n {
		e.deps.commitLater([]persistence.Write{{Key: []byte(fmt.Sprintf("later-%02d", i)), Value: []byte{1}}})
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := store.Get([]byte(fmt.Sprintf("later-%02d", i))); err != nil {
			t.Fatalf("write %d queued before Close is not in the store: %v", i, err)
		}
	}
}

// Acknowledgements still queued in an installation when the engine closes
// are written: Close lets each installation work through its queue before
// it stops. (Found by review: Close stopped installations with a system
// message, which runs before the queued Acks, and the redelivered messages
// came back after a restart.)
func TestCloseWritesQueuedAcks(t *testing.T) {
	e, store := memoryEngine(t)
	id, _, err := e.CreateInstallation(nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	ws := make([]persistence.Write, n)
	for i := range ws {
		ws[i] = persistence.Write{Key: persistence.InboxKey(id, []byte(fmt.Sprintf("msg-%04d", i))), Value: []byte{1}}
	}
	if err := store.Commit(ws); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := e.Ack(id, []byte(fmt.Sprintf("msg-%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	left := 0
	if err := store.Scan(persistence.InboxPrefix(id), func(_, _ []byte) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of %d acknowledged messages still in the inbox after Close", left, n)
	}
}
