package workers

import (
	"sync"
	"testing"
	"time"
)

// TestPoolIdleWorkersExit: the workers an earlier burst needed are let go
// once idle (by halves, every period), the reaper ends with the last of
// them, and the pool still runs work afterwards, on a worker (and with a
// reaper) that go in turn.
func TestPoolIdleWorkersExit(t *testing.T) {
	p := New(10 * time.Millisecond)
	defer p.Stop()
	const n = 64
	release := make(chan struct{})
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	for range n {
		p.Go(func() {
			started.Done()
			<-release // each blocks a worker: the pool grows to n
			done.Done()
		})
	}
	started.Wait()
	if got := p.Live(); got != n {
		t.Fatalf("%d workers for %d blocked functions", got, n)
	}
	close(release)
	done.Wait()
	waitLive(t, p, 0)
	waitReaper(t, p)
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("no work runs after the pool shrank")
	}
	waitLive(t, p, 0)
	waitReaper(t, p)
}

// TestPoolReuses: functions run one after another reuse one worker.
func TestPoolReuses(t *testing.T) {
	p := New(time.Hour)
	defer p.Stop()
	for range 100 {
		ran := make(chan struct{})
		p.Go(func() { close(ran) })
		<-ran
		// Until the worker waits again, a Go may start another one.
		time.Sleep(time.Millisecond)
	}
	if got := p.Live(); got > 2 {
		t.Fatalf("%d workers for sequential functions", got)
	}
}

// TestPoolStop: Stop lets every idle worker go, and a Go after it still
// runs.
func TestPoolStop(t *testing.T) {
	p := New(time.Hour)
	var wg sync.WaitGroup
	wg.Add(8)
	for range 8 {
		p.Go(wg.Done)
	}
	wg.Wait()
	p.Stop()
	waitLive(t, p, 0)
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a Go after Stop did not run")
	}
	waitLive(t, p, 0)
}

func waitLive(t *testing.T, p *Pool, want int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); p.Live() != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers, want %d", p.Live(), want)
		}
	}
}

func waitReaper(t *testing.T, p *Pool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); p.reaping.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the reaper runs on with no worker left")
		}
	}
}
