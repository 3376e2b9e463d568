// Package workers runs functions on reused goroutines. A goroutine started
// per function begins with a small stack that crypto and protobuf code then
// grow (runtime.copystack was about 12 % of the engine's CPU in a durable
// burst profile, when protoactor-go's dispatcher started a goroutine per
// mailbox pass); a worker of a Pool keeps its grown stack for the next
// function. A function goes to an idle worker if there is one, and
// otherwise to a new goroutine that joins the pool afterwards: work never
// queues behind a busy worker, so a function that blocks holds up no other,
// exactly as with a goroutine each.
//
// Idle workers wait with no timer: a worker that reset an idle timer after
// each function and waited on it (Go adds a channel timer to its heap
// whenever a goroutine blocks on it) cost about 1.5 % of the engine's CPU
// in a durable pingpong profile, where the sessions' workers block on every
// commit. A reaper lets half of the idle workers go every Idle period
// instead, and ends once no worker is left, so a Pool that is dropped
// without Stop leaks nothing for long.
package workers

import (
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdle is how often idle workers are let go by halves.
const DefaultIdle = 2 * time.Second

// Pool is a set of reusable goroutines. The zero value is not usable: see
// New.
type Pool struct {
	work    chan func()
	reap    chan struct{} // an idle worker that receives from it exits
	quit    chan struct{}
	every   time.Duration
	idle    atomic.Int64 // workers waiting for work
	live    atomic.Int64 // workers
	reaping atomic.Bool  // a reaper runs
	once    sync.Once
}

// New makes a pool whose idle workers are let go by halves every idle
// (DefaultIdle when not positive).
func New(idle time.Duration) *Pool {
	if idle <= 0 {
		idle = DefaultIdle
	}
	return &Pool{work: make(chan func()), reap: make(chan struct{}), quit: make(chan struct{}), every: idle}
}

// Go runs fn on an idle worker, or on a new one.
func (p *Pool) Go(fn func()) {
	select {
	case p.work <- fn:
	default:
		p.live.Add(1)
		if p.reaping.CompareAndSwap(false, true) {
			go p.reaper()
		}
		go p.worker(fn)
	}
}

// Idle is the number of workers waiting for work.
func (p *Pool) Idle() int64 { return p.idle.Load() }

// Live is the number of workers.
func (p *Pool) Live() int64 { return p.live.Load() }

// Stop lets the idle workers go at once, and each busy one when its
// function returns. A Go after it still runs its function, on a goroutine
// of its own.
func (p *Pool) Stop() { p.once.Do(func() { close(p.quit) }) }

func (p *Pool) worker(fn func()) {
	defer p.live.Add(-1)
	for {
		fn()
		// An idle worker must not keep the last function (and what it
		// holds: an actor's mailbox, a delivery) alive: the select
		// receives into fn, cleared here.
		fn = nil
		p.idle.Add(1)
		select {
		case fn = <-p.work:
			p.idle.Add(-1)
		case <-p.reap:
			p.idle.Add(-1)
			return
		case <-p.quit:
			p.idle.Add(-1)
			return
		}
	}
}

// reaper lets half of the workers idle at each tick go: a pool that no
// longer has work shrinks to nothing within a few ticks, and one under
// steady load keeps about what it needs. It ends when no worker is left
// (Go starts another with the next worker).
func (p *Pool) reaper() {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.quit:
			p.reaping.Store(false)
			return
		}
		for n := (p.idle.Load() + 1) / 2; n > 0; n-- {
			select {
			case p.reap <- struct{}{}:
			default:
				n = 0 // none is waiting any more
			}
		}
		if p.live.Load() == 0 {
			p.reaping.Store(false)
			// A worker made meanwhile found reaping still set and started
			// no reaper: carry on for it.
			if p.live.Load() == 0 || !p.reaping.CompareAndSwap(false, true) {
				return
			}
		}
	}
}
