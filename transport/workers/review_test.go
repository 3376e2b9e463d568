package workers

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReviewEveryGoRuns: bursts of concurrent Go calls with a reaper
// ticking every millisecond (workers let go, the reaper ending and being
// restarted all the time): every function runs exactly once, and the pool
// then shrinks to nothing with no reaper left.
func TestReviewEveryGoRuns(t *testing.T) {
	p := New(time.Millisecond)
	defer p.Stop()
	var ran atomic.Int64
	const callers, per = 8, 2000
	for round := range 5 {
		var wg sync.WaitGroup
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var done sync.WaitGroup
				for i := range per {
					done.Add(1)
					p.Go(func() { ran.Add(1); done.Done() })
					if i%97 == 0 {
						time.Sleep(time.Millisecond) // let the reaper act
					}
				}
				done.Wait()
			}()
		}
		wg.Wait()
		if got := ran.Load(); got != int64((round+1)*callers*per) {
			t.Fatalf("round %d: %d functions ran, want %d", round, got, (round+1)*callers*per)
		}
		waitLive(t, p, 0)
		waitReaper(t, p)
		if p.Idle() != 0 {
			t.Fatalf("%d idle with no worker", p.Idle())
		}
	}
}

// TestReviewNoIdleWorkerWithoutReaper: the pool is grown and left to shrink
// over and over, with single Go calls landing just as the reaper decides
// to end: whenever workers are left, a reaper runs (or the pool empties).
func TestReviewNoIdleWorkerWithoutReaper(t *testing.T) {
	p := New(time.Millisecond)
	defer p.Stop()
	for i := range 3000 {
		done := make(chan struct{})
		p.Go(func() { close(done) })
		<-done
		// Sleep about one reaper period, so that the Go lands near the
		// reaper's last look at live.
		time.Sleep(time.Duration(i%3) * 500 * time.Microsecond)
	}
	waitLive(t, p, 0)
	waitReaper(t, p)
}

// TestReviewGoStopRace: Go calls racing with Stop all run, and every
// worker ends.
func TestReviewGoStopRace(t *testing.T) {
	for range 50 {
		p := New(time.Millisecond)
		var ran atomic.Int64
		var wg sync.WaitGroup
		const callers, per = 4, 200
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range per {
					p.Go(func() { ran.Add(1) })
				}
			}()
		}
		time.Sleep(100 * time.Microsecond)
		p.Stop()
		wg.Wait()
		for deadline := time.Now().Add(5 * time.Second); ran.Load() != callers*per; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d functions ran", ran.Load(), callers*per)
			}
		}
		waitLive(t, p, 0)
		waitReaper(t, p)
	}
}

// TestReviewDroppedPoolLeaksNothing: a pool dropped without Stop, with
// many idle workers, shrinks to nothing: no goroutine is left.
func TestReviewDroppedPoolLeaksNothing(t *testing.T) {
	p := New(time.Millisecond)
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(100)
	for range 100 {
		p.Go(func() { started.Done(); <-release })
	}
	started.Wait()
	close(release)
	waitLive(t, p, 0)
	waitReaper(t, p)
}
