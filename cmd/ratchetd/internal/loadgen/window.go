package loadgen

import (
	"errors"
	"sync"
	"time"

	"github.com/ratchetd/ratchetd/actors/deadline"
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
	for range n {
		select {
		case w.slots <- struct{}{}:
			continue
		default:
		}
		if err := w.wait(stop, timeout); err != nil {
			return err
		}
	}
	return nil
}

func (w *window) wait(stop <-chan struct{}, timeout time.Duration) error {
	c := clockFor(timeout)
	start, tick := c.Begin()
	defer c.End()
	for {
		select {
		case w.slots <- struct{}{}:
			return nil
		case <-stop:
			return errStopped
		case <-tick:
			var over bool
			if over, tick = c.Expired(start); over {
				return errStalled
			}
		}
	}
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
		return nil // already notified: no clock needed
	default:
	}
	c := clockFor(timeout)
	start, tick := c.Begin()
	defer c.End()
	for {
		select {
		case <-s:
			return nil
		case <-stop:
			return errStopped
		case <-tick:
			var over bool
			if over, tick = c.Expired(start); over {
				return errStalled
			}
		}
	}
}

// clocks time out the load generator's waits, one per timeout (there are
// two): a wait per message, on a timer of its own, cost the timer's Reset
// and Stop and the runtime's timer-heap work in the process being
// measured (actors/deadline). They tick for the life of the process.
var clocks sync.Map // time.Duration → *deadline.Clock

func clockFor(timeout time.Duration) *deadline.Clock {
	if c, ok := clocks.Load(timeout); ok {
		return c.(*deadline.Clock)
	}
	c := deadline.New(timeout)
	if prev, loaded := clocks.LoadOrStore(timeout, c); loaded {
		c.Stop()
		return prev.(*deadline.Clock)
	}
	return c
}
