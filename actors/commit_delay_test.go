package actors

import (
	"fmt"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// TestCommitDelay: after a group commit of CommitDelayMinBatch requests or
// more, the next one waits CommitDelay for company: requests that come
// within it share one commit. After a small one nothing waits, and with
// CommitDelay negative never.
func TestCommitDelay(t *testing.T) {
	for _, delay := range []time.Duration{time.Second, -1} {
		t.Run(fmt.Sprint("delay=", delay), func(t *testing.T) {
			store := newGatedCommitStore()
			tr := transport.NewMemory(transport.MemoryOptions{})
			t.Cleanup(func() { tr.Close() })
			e := NewEngine(Config{CommitDelay: delay, CommitDelayMinBatch: 4}, store, tr, func(Message) {})
			t.Cleanup(func() { e.Close() })
			write := func(k string) { e.deps.commitLater([]persistence.Write{{Key: []byte(k), Value: []byte{1}}}) }
			stored := func(k string) bool { _, err := store.Get([]byte(k)); return err == nil }

			// A commit held at the gate while 10 requests queue: the next
			// group commit holds them all (the store is busy).
			store.armed.Store(true)
			write("first")
			<-store.entered
			for i := range 10 {
				write(fmt.Sprint("busy-", i))
			}
			time.Sleep(50 * time.Millisecond) // queued in the Committer's mailbox
			store.armed.Store(false)
			close(store.gate)
			waitFor(t, "the busy batch", func() bool { return stored("busy-9") })

			// Three requests 50 ms apart, within the delay.
			before := store.Commits
			for i := range 3 {
				write(fmt.Sprint("spaced-", i))
				time.Sleep(50 * time.Millisecond)
			}
			waitFor(t, "the spaced requests", func() bool { return stored("spaced-2") })
			commits := store.Commits - before
			if delay > 0 && commits != 1 {
				t.Fatalf("after a busy batch, 3 requests within CommitDelay made %d commits, want 1", commits)
			}
			if delay < 0 && commits != 3 {
				t.Fatalf("with CommitDelay off, 3 spaced requests made %d commits, want 3", commits)
			}

			// That batch held 3, under CommitDelayMinBatch: the next commit
			// does not wait.
			start := time.Now()
			write("alone")
			waitFor(t, "alone", func() bool { return stored("alone") })
			if took := time.Since(start); took > 700*time.Millisecond {
				t.Fatalf("a request after a small batch took %v: it waited for CommitDelay", took)
			}
		})
	}
}
