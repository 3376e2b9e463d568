package deadline

import (
	"sync"
	"testing"
	"time"
)

// TestReviewLateTickShortensWait (review 19, fixed: a wait now reads the
// clock): the wait's length was counted in ticks the ticking goroutine had
// handled, not in time. When that goroutine is
// late for a tick (descheduled: a loaded machine, a GC assist; here it is
// held on d.mu, which it takes after every tick), a wait that begins in
// that gap starts from the previous tick, the late tick is then handled at
// once, and the following ones come back on the ticker's original grid:
// the wait times out after about 7 periods and a bit, less than the 8
// periods (the timeout) it is documented to last at least.
func TestReviewLateTickShortensWait(t *testing.T) {
	const timeout = 400 * time.Millisecond
	const period = timeout / 8
	d := New(timeout)
	defer d.Stop()

	// A wait in progress, so that the Begin below does not take d.mu.
	_, tk := d.begin()
	defer d.end()

	d.mu.Lock()
	<-tk // tick k: the ticking goroutine now blocks on d.mu
	seen := time.Now()
	// Tick k+1 is due at seen+period; the goroutine misses it.
	time.Sleep(period + period*9/10)

	began := time.Now()
	start, tick := d.begin() // start = k
	d.mu.Unlock()            // the goroutine handles k+1 at once
	defer d.end()
	for {
		<-tick
		var over bool
		if over, tick = d.expired(start); over {
			break
		}
	}
	got := time.Since(began)
	t.Logf("tick k seen at 0, wait began at %v, timed out after %v (timeout %v)", began.Sub(seen), got, timeout)
	if got < timeout {
		t.Fatalf("a wait of timeout %v timed out after %v", timeout, got)
	}
}

// TestReviewShortTimeoutRunsLong (review 19, fixed): the tick period is
// clamped to a millisecond, and a clock for a timeout under 8ms timed out
// its waits after 8 to 9ms, several times the timeout.
func TestReviewShortTimeoutRunsLong(t *testing.T) {
	const timeout = time.Millisecond
	d := New(timeout)
	defer d.Stop()
	got := time.Hour
	for range 5 {
		got = min(got, waitOut(d))
	}
	if got > 4*timeout {
		t.Fatalf("a wait of timeout %v timed out after %v at the soonest", timeout, got)
	}
}

// TestReviewShortWaitUnderLoad (review 19, fixed): the same cause as
// TestReviewLateTickShortensWait with nothing held: many waits on a clock
// ticking every millisecond, on a busy machine (-race, a few goroutines),
// and some time out before their timeout, by the ticking goroutine's
// scheduling delay at the tick before they began.
func TestReviewShortWaitUnderLoad(t *testing.T) {
	const timeout = 8 * time.Millisecond // a tick every millisecond
	d := New(timeout)
	defer d.Stop()
	var mu sync.Mutex
	shortest := time.Hour
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				time.Sleep(time.Duration((g*7+i)%5) * 300 * time.Microsecond)
				got := waitOut(d)
				mu.Lock()
				shortest = min(shortest, got)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("shortest wait %v (timeout %v)", shortest, timeout)
	if shortest < timeout {
		t.Fatalf("a wait of timeout %v timed out after %v", timeout, shortest)
	}
}

// TestReviewStoppedClockStillTimesOut (passes: evidence): after Stop, waits
// that begin and end in quick succession, from many goroutines, around
// the moments the ticking goroutine ends and restarts, all time out (none
// hangs), and the goroutine ends once they are over.
func TestReviewStoppedClockStillTimesOut(t *testing.T) {
	const timeout = 8 * time.Millisecond // a tick every millisecond
	d := New(timeout)
	d.Stop()
	var wg sync.WaitGroup
	fail := make(chan time.Duration, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				// Gaps around a tick, so the goroutine ends between waits.
				time.Sleep(time.Duration((g*7+i)%5) * 700 * time.Microsecond)
				if i%3 == 0 {
					// A wait answered at once.
					d.begin()
					d.end()
					continue
				}
				done := make(chan time.Duration, 1)
				go func() { done <- waitOut(d) }()
				select {
				case got := <-done:
					_ = got
				case <-time.After(5 * time.Second):
					fail <- -1
					return
				}
			}
		}()
	}
	wg.Wait()
	close(fail)
	for got := range fail {
		t.Fatalf("a wait after Stop timed out after %v (-1: never)", got)
	}
	waitStopped(t, d)
}
