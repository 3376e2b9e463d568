package actors

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// CreateInstallation commits through the Committer; an engine closed while
// creations are under way waits for them and then refuses new ones, so
// none waits for a Committer that is gone (CommitTimeout, 2 minutes).
func TestCreateInstallationDuringClose(t *testing.T) {
	e, _ := memoryEngine(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, refused := 0, 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_, _, err := e.CreateInstallation(nil)
				mu.Lock()
				switch {
				case err == nil:
					created++
				case errors.Is(err, ErrClosed):
					refused++
				default:
					mu.Unlock()
					t.Errorf("CreateInstallation: %v", err)
					return
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("CreateInstallation still waiting after Close")
	}
	if _, _, err := e.CreateInstallation(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	t.Logf("%d created, %d refused", created, refused)
}

// An engine on a shared in-memory transport that was closed first: Close
// cancels its subscriptions, which must not panic (from the review).
func TestEngineCloseAfterTransportClose(t *testing.T) {
	tr := transport.NewMemory(transport.MemoryOptions{})
	e := NewEngine(Config{}, persistence.NewMemory(), tr, func(Message) {})
	if _, _, err := e.CreateInstallation(nil); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Engine.Close after the transport's Close panicked: %v", r)
		}
	}()
	e.Close()
}
