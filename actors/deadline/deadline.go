// Package deadline times out the waits of a hot path without a timer each:
// a session's commit (two per message), the Engine's requests (a Send, a
// delivery), the load generator's wait for each receipt. A time.Timer per
// wait cost its Reset and Stop, and the runtime adds a channel timer to its
// heap whenever a goroutine blocks on it and removes it when it wakes:
// together about 1 % of the engine's CPU in a durable pingpong profile.
// Here one goroutine ticks every eighth of the timeout (at least every
// millisecond) and closes a channel at each tick; a wait reads the clock
// when it begins, selects on its answer and on that channel, and gives up
// at the first tick once its timeout has passed. So a wait times out after
// its timeout and before another period has passed, unless the ticking
// goroutine waits for a core. (Counting ticks instead of reading the clock
// let a wait that began just after a late tick end up to a period early.)
//
// The ticking goroutine runs until Stop, and after it while a wait is in
// progress, so that no wait outlives its owner's Close without a timeout.
package deadline

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Clock times out waits of one timeout (Recv).
type Clock struct {
	timeout time.Duration
	period  time.Duration
	cur     atomic.Pointer[deadlineTick]
	waiting atomic.Int64 // waits in progress

	mu      sync.Mutex
	running bool // a ticking goroutine is running
	stopped bool // Stop was called: tick only while waits are in progress
}

type deadlineTick struct {
	next chan struct{} // closed at the next tick
}

// New starts a clock for waits of timeout.
func New(timeout time.Duration) *Clock {
	d := &Clock{timeout: timeout, period: max(timeout/8, time.Millisecond)}
	d.cur.Store(&deadlineTick{next: make(chan struct{})})
	d.mu.Lock()
	d.startLocked()
	d.mu.Unlock()
	return d
}

func (d *Clock) startLocked() {
	if d.running {
		return
	}
	d.running = true
	go d.tick()
}

func (d *Clock) tick() {
	t := time.NewTicker(d.period)
	defer t.Stop()
	for range t.C {
		old := d.cur.Load()
		d.cur.Store(&deadlineTick{next: make(chan struct{})})
		close(old.next)
		d.mu.Lock()
		if d.stopped && d.waiting.Load() == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
}

// Stop lets the ticking goroutine end once no wait is in progress.
func (d *Clock) Stop() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
}

// ErrExpired: the wait's timeout passed. ErrStopped: its stop channel was
// closed.
var (
	ErrExpired = errors.New("deadline: timed out")
	ErrStopped = errors.New("deadline: stopped")
)

// Recv waits for a value from ch until c's timeout has passed (ErrExpired)
// or stop is closed (ErrStopped; nil: never).
func Recv[T any](c *Clock, ch <-chan T, stop <-chan struct{}) (T, error) {
	var zero T
	start, tick := c.begin()
	defer c.end()
	for {
		select {
		case v := <-ch:
			return v, nil
		case <-stop:
			return zero, ErrStopped
		case <-tick:
			var over bool
			if over, tick = c.expired(start); over {
				return zero, ErrExpired
			}
		}
	}
}

// begin starts a wait: the caller selects on its answer and on tick, and
// calls expired when tick fires, then end when the wait is over.
func (d *Clock) begin() (start time.Time, tick <-chan struct{}) {
	if d.waiting.Add(1) == 1 {
		d.mu.Lock()
		if d.stopped {
			d.startLocked() // a wait after Stop: tick for it
		}
		d.mu.Unlock()
	}
	return time.Now(), d.cur.Load().next
}

// expired reports whether the wait begun at start is over, and otherwise
// gives the channel of the next tick.
func (d *Clock) expired(start time.Time) (bool, <-chan struct{}) {
	return time.Since(start) >= d.timeout, d.cur.Load().next
}

// end ends a wait.
func (d *Clock) end() { d.waiting.Add(-1) }
