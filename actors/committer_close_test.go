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
func TestCloseWritesQueuedCommits(t *testing.T) {
	store := persistence.NewMemory()
	tr := transport.NewMemory(transport.MemoryOptions{})
	defer tr.Close()
	e := NewEngine(Config{}, store, tr, func(Message) {})
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
