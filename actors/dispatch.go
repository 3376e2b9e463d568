package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// workerPool is the engine's actor dispatcher. protoactor-go's default
// dispatcher starts a new goroutine every time a mailbox is scheduled; each
// starts with a small stack that the crypto and protobuf code then grow
// (runtime.copystack was about 12 % of the engine's CPU in a durable burst
// profile). The pool reuses goroutines whose stacks are already grown: a
// scheduled mailbox goes to an idle worker if there is one, and otherwise
// to a new goroutine that joins the pool afterwards. It never queues work
// behind a busy worker, so an actor that blocks (a session waiting for its
// commit) cannot hold up another, exactly as with one goroutine per
// schedule. Idle workers beyond the recent need exit after IdleWorker.
type workerPool struct {
	work       chan func()
	quit       chan struct{}
	throughput int
	idle       time.Duration
	stopOnce   sync.Once
}

// Dispatcher defaults: protoactor-go's own throughput (messages per
// mailbox pass) and how long a worker waits for work before it exits.
const (
	DefaultDispatcherThroughput = 300
	DefaultIdleWorker           = 2 * time.Second
)

func newWorkerPool(throughput int, idle time.Duration) *workerPool {
	if throughput <= 0 {
		throughput = DefaultDispatcherThroughput
	}
	if idle <= 0 {
		idle = DefaultIdleWorker
	}
	return &workerPool{work: make(chan func()), quit: make(chan struct{}), throughput: throughput, idle: idle}
}

var _ actor.Dispatcher = (*workerPool)(nil)

// Schedule runs fn on an idle worker, or on a new one.
func (p *workerPool) Schedule(fn func()) {
	select {
	case p.work <- fn:
	default:
		go p.worker(fn)
	}
}

// Throughput is the number of messages a mailbox processes per pass.
func (p *workerPool) Throughput() int { return p.throughput }

func (p *workerPool) worker(fn func()) {
	fn()
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		select {
		case fn := <-p.work:
			fn()
			t.Reset(p.idle)
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// stop lets the idle workers go (Engine.Close); a Schedule after it still
// runs its function, on a goroutine of its own.
func (p *workerPool) stop() { p.stopOnce.Do(func() { close(p.quit) }) }
