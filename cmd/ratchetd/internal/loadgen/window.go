package loadgen

import (
	"errors"
	"sync"
	"time"
)

// errStalled: a sender waited too long for its messages to be received.
var errStalled = errors.New("loadgen: no receipt within the timeout (message lost or engine stalled)")

// errStopped: the run ended while a sender waited.
var errStopped = errors.New("loadgen: run stopped")

// window bounds the messages in flight (sent, not yet received) of one
// conversation, so that latency measures the engine rather than a queue
// the load generator filled without limit.
type window struct {
	slots chan struct{}
}

func newWindow(n int) *window { return &window{slots: make(chan struct{}, n)} }

// acquire takes n slots (at most the window's size), waiting for receipts.
func (w *window) acquire(n int, stop <-chan struct{}, timeout time.Duration) error {
	n = min(n, cap(w.slots))
	var t *time.Timer
	for range n {
		select {
		case w.slots <- struct{}{}:
			continue
		default:
		}
		if t == nil {
			t = getTimer(timeout)
			defer putTimer(t)
		}
		select {
		case w.slots <- struct{}{}:
		case <-stop:
			return errStopped
		case <-t.C:
			return errStalled
		}
	}
	return nil
}

// release frees one slot; it never blocks (called from the handler).
func (w *window) release() {
	select {
	case <-w.slots:
	default:
	}
}

// signal is a non-blocking one-shot notification from the handler to a
// waiting sender.
type signal chan struct{}

func newSignal() signal { return make(signal, 1) }

func (s signal) notify() {
	select {
	case s <- struct{}{}:
	default:
	}
}

func (s signal) wait(stop <-chan struct{}, timeout time.Duration) error {
	select {
	case <-s:
		return nil // already notified: no timer needed
	default:
	}
	t := getTimer(timeout)
	defer putTimer(t)
	select {
	case <-s:
		return nil
	case <-stop:
		return errStopped
	case <-t.C:
		return errStalled
	}
}

// timers recycles the load generator's wait timers (a wait per message:
// a new timer is 4 allocations in the process being measured). Since Go
// 1.23 a stopped timer delivers no stale tick, so a Reset one starts clean.
var timers sync.Pool

func getTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

func putTimer(t *time.Timer) {
	if !t.Stop() {
		select { // a stale tick under GODEBUG=asynctimerchan=1
		case <-t.C:
		default:
		}
	}
	timers.Put(t)
}
