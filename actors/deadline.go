package actors

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadlines times out the waits of the hot path without a timer each: a
// session's commit (two per message) and the Engine's requests (a Send, a
// delivery). A time.Timer per wait cost its Reset and Stop, and the runtime
// adds a channel timer to its heap whenever a goroutine blocks on it and
// removes it when it wakes: together about 1 % of the engine's CPU in a
// durable pingpong profile. Here one goroutine ticks every eighth of the
// timeout and closes a channel at each tick; a wait selects on its answer
// and on that channel, and gives up at the ninth tick after it began. So a
// wait times out after between 1 and 1.125 times the timeout.
//
// The ticking goroutine runs while the engine is open or a wait is in
// progress, so that no wait outlives the engine's Close without a timeout.
type deadlines struct {
	period  time.Duration
	cur     atomic.Pointer[deadlineTick]
	waiting atomic.Int64 // waits in progress

	mu      sync.Mutex
	running bool // a ticking goroutine is running
	stopped bool // the engine closed: tick only while waits are in progress
}

type deadlineTick struct {
	n    uint64
	next chan struct{} // closed at the next tick
}

// deadlineTicks is how many ticks a wait lasts: ticks are timeout/8 apart.
const deadlineTicks = 9

func newDeadlines(timeout time.Duration) *deadlines {
	d := &deadlines{period: max(timeout/(deadlineTicks-1), time.Millisecond)}
	d.cur.Store(&deadlineTick{next: make(chan struct{})})
	d.mu.Lock()
	d.startLocked()
	d.mu.Unlock()
	return d
}

func (d *deadlines) startLocked() {
	if d.running {
		return
	}
	d.running = true
	go d.tick()
}

func (d *deadlines) tick() {
	t := time.NewTicker(d.period)
	defer t.Stop()
	for range t.C {
		old := d.cur.Load()
		d.cur.Store(&deadlineTick{n: old.n + 1, next: make(chan struct{})})
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

// stop lets the ticking goroutine end once no wait is in progress.
func (d *deadlines) stop() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
}

// begin starts a wait: the caller selects on its answer and on tick, and
// calls expired when tick fires, then end when the wait is over.
func (d *deadlines) begin() (start uint64, tick <-chan struct{}) {
	if d.waiting.Add(1) == 1 {
		d.mu.Lock()
		if d.stopped {
			d.startLocked() // a wait after Close: tick for it
		}
		d.mu.Unlock()
	}
	t := d.cur.Load()
	return t.n, t.next
}

// expired reports whether the wait begun at start is over, and otherwise
// gives the channel of the next tick.
func (d *deadlines) expired(start uint64) (bool, <-chan struct{}) {
	t := d.cur.Load()
	return t.n-start >= deadlineTicks, t.next
}

func (d *deadlines) end() { d.waiting.Add(-1) }
