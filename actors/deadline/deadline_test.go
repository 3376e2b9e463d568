package deadline

import (
	"testing"
	"time"
)

// waitOut waits as a commit does, for an answer that never comes, and
// returns how long it took to time out.
func waitOut(d *Clock) time.Duration {
	began := time.Now()
	if _, err := Recv(d, (<-chan struct{})(nil), nil); err != ErrExpired {
		panic(err)
	}
	return time.Since(began)
}

// TestRecv: an answer, and a closed stop channel, end a wait at once,
// with the answer or ErrStopped.
func TestRecv(t *testing.T) {
	d := New(time.Minute)
	defer d.Stop()
	ch := make(chan int, 1)
	ch <- 7
	if v, err := Recv(d, ch, nil); v != 7 || err != nil {
		t.Fatalf("Recv = %d, %v; want 7, nil", v, err)
	}
	stop := make(chan struct{})
	close(stop)
	if v, err := Recv(d, ch, stop); v != 0 || err != ErrStopped {
		t.Fatalf("Recv after stop = %d, %v; want 0, ErrStopped", v, err)
	}
	if n := d.waiting.Load(); n != 0 {
		t.Fatalf("%d waits still counted after they returned", n)
	}
}

// TestDeadlines: a wait times out after at least its timeout and not much
// more (ticks are an eighth of it apart), also when it begins after the
// engine closed (stop), when the ticking goroutine has to start again.
// waitStopped fails t unless d's ticking goroutine ends within 5 s.
func waitStopped(t *testing.T, d *Clock) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		d.mu.Lock()
		running := d.running
		d.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still ticking after stop with no wait in progress")
		}
	}
}

func TestDeadlines(t *testing.T) {
	const timeout = 80 * time.Millisecond
	d := New(timeout)
	for range 3 {
		if got := waitOut(d); got < timeout || got > 4*timeout {
			t.Fatalf("timed out after %v, want %v to about %v", got, timeout, timeout*9/8)
		}
	}
	d.Stop()
	// The goroutine ends at its next tick: no wait is in progress.
	waitStopped(t, d)
	if got := waitOut(d); got < timeout || got > 4*timeout {
		t.Fatalf("after stop: timed out after %v, want %v to about %v", got, timeout, timeout*9/8)
	}
}

// TestDeadlinesAnswered: an answered wait is not disturbed by the ticks of
// the others, and many waits share one clock.
func TestDeadlinesAnswered(t *testing.T) {
	d := New(time.Second)
	defer d.Stop()
	done := make(chan int)
	for i := range 64 {
		go func() {
			start, tick := d.begin()
			defer d.end()
			answer := time.After(time.Duration(i%8) * 30 * time.Millisecond)
			for {
				select {
				case <-answer:
					done <- 1
					return
				case <-tick:
					var over bool
					if over, tick = d.expired(start); over {
						done <- 0
						return
					}
				}
			}
		}()
	}
	for range 64 {
		if <-done != 1 {
			t.Fatal("a wait answered within its timeout timed out")
		}
	}
}
