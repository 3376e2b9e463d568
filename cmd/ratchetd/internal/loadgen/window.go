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
	free chan struct{} // a token per message that may still be sent
}

func newWindow(n int) *window {
	w := &window{free: make(chan struct{}, n)}
	for range n {
		w.free <- struct{}{}
	}
	return w
}

// acquire takes n tokens (at most the window's size), waiting for receipts.
func (w *window) acquire(n int, stop <-chan struct{}, timeout time.Duration) error {
	n = min(n, cap(w.free))
	for range n {
		select {
		case <-w.free:
			continue
		default:
		}
		if _, err := deadline.Recv(clockFor(timeout), w.free, stop); err != nil {
			return waitError(err)
		}
	}
	return nil
}

// release gives one token back; it never blocks (called from the handler).
func (w *window) release() {
	select {
	case w.free <- struct{}{}:
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
	_, err := deadline.Recv(clockFor(timeout), s, stop)
	return waitError(err)
}

// waitError is the load generator's name for how a wait ended.
func waitError(err error) error {
	switch err {
	case deadline.ErrStopped:
		return errStopped
	case deadline.ErrExpired:
		return errStalled
	}
	return err
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
