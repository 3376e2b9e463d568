package actors

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// The delay follows the process's CPU use: it grows by an eighth of its
// maximum per window of busy cores, halves when they idle, and is never
// longer than CommitDelay.
func TestCommitPace(t *testing.T) {
	var cpu time.Duration
	defer func(f func() (time.Duration, bool)) { paceCPU = f }(paceCPU)
	paceCPU = func() (time.Duration, bool) { return cpu, true }
	const cores, max = 2, 8 * time.Millisecond
	var p commitPace
	now := time.Unix(0, 0)
	window := func(share float64) {
		now = now.Add(commitPaceWindow)
		cpu += time.Duration(share * float64(commitPaceWindow) * cores)
		p.adjust(now, max, cores)
	}
	p.adjust(now, max, cores) // the first window starts
	for i := 1; i <= 10; i++ {
		window(0.99)
		if want := min(time.Duration(i)*max/8, max); p.delay != want {
			t.Fatalf("busy window %d: delay %v, want %v", i, p.delay, want)
		}
	}
	window(0.93) // between the thresholds: kept
	if p.delay != max {
		t.Fatalf("delay %v after a window between the thresholds, want %v", p.delay, max)
	}
	now = now.Add(commitPaceWindow / 2) // too short a window: no verdict
	p.adjust(now, max, cores)
	if p.delay != max {
		t.Fatalf("delay %v after half a window, want %v", p.delay, max)
	}
	now = now.Add(commitPaceWindow / 2)
	cpu += time.Duration(0.5 * float64(commitPaceWindow) * cores)
	p.adjust(now, max, cores) // the whole window's share: 0.25 < idleShare
	if p.delay != max/2 {
		t.Fatalf("idle window: delay %v, want %v", p.delay, max/2)
	}
	for range 4 {
		window(0.5)
	}
	if p.delay != 0 {
		t.Fatalf("delay %v after idle windows, want 0", p.delay)
	}
	window(0.99)
	p.adjust(now, 0, cores) // CommitDelay off
	if p.delay != 0 {
		t.Fatalf("delay %v with CommitDelay off", p.delay)
	}
}

// TestCommitDelay: with busy cores, after a group commit of
// CommitDelayMinBatch requests or more, the next one waits for company:
// requests that come within the delay share one commit. After a small one
// nothing waits, and with CommitDelay negative never.
func TestCommitDelay(t *testing.T) {
	defer func(f func() (time.Duration, bool)) { paceCPU = f }(paceCPU)
	var mu sync.Mutex
	start := time.Now()
	paceCPU = func() (time.Duration, bool) { // every core busy
		mu.Lock()
		defer mu.Unlock()
		return 4 * time.Since(start), true
	}
	for _, delay := range []time.Duration{2 * time.Second, -1} {
		t.Run(fmt.Sprint("delay=", delay), func(t *testing.T) {
			store := newGatedCommitStore()
			tr := transport.NewMemory(transport.MemoryOptions{})
			t.Cleanup(func() { tr.Close() })
			e := NewEngine(Config{CommitDelay: delay, CommitDelayMinBatch: 4}, store, tr, func(Message) {})
			t.Cleanup(func() { e.Close() })
			write := func(k string) { e.deps.commitLater([]persistence.Write{{Key: []byte(k), Value: []byte{1}}}) }
			stored := func(k string) bool { _, err := store.Get([]byte(k)); return err == nil }

			// Commits, one at a time, over three windows of busy cores:
			// the delay grows to at least 750 ms.
			mu.Lock()
			start = time.Now()
			mu.Unlock()
			for begin, i := time.Now(), 0; time.Since(begin) < 4*commitPaceWindow || i < 4; i++ {
				k := fmt.Sprint("warm-", i)
				write(k)
				waitFor(t, k, func() bool { return stored(k) })
				time.Sleep(commitPaceWindow / 4)
			}

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
				t.Fatalf("after a busy batch, 3 requests within the delay made %d commits, want 1", commits)
			}
			if delay < 0 && commits != 3 {
				t.Fatalf("with CommitDelay off, 3 spaced requests made %d commits, want 3", commits)
			}

			// That batch held 3, under CommitDelayMinBatch: the next commit
			// does not wait.
			begin := time.Now()
			write("alone")
			waitFor(t, "alone", func() bool { return stored("alone") })
			if took := time.Since(begin); took > 500*time.Millisecond {
				t.Fatalf("a request after a small batch took %v: it waited for the delay", took)
			}
		})
	}
}
