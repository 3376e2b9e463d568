package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/transport/workers"
)

// workerPool is the engine's actor dispatcher. protoactor-go's default
// dispatcher starts a new goroutine every time a mailbox is scheduled; this
// one runs mailbox passes on a workers.Pool, whose goroutines keep their
// grown stacks. It never queues a pass behind a busy worker, so an actor
// that blocks (a session waiting for its commit) cannot hold up another,
// exactly as with one goroutine per schedule.
type workerPool struct {
	*workers.Pool
	throughput int
}

// DefaultDispatcherThroughput is protoactor-go's own throughput (messages
// per mailbox pass).
const DefaultDispatcherThroughput = 300

// newWorkerPool: idle workers are let go by halves every idle
// (workers.DefaultIdle when not positive).
func newWorkerPool(throughput int, idle time.Duration) *workerPool {
	if throughput <= 0 {
		throughput = DefaultDispatcherThroughput
	}
	return &workerPool{Pool: workers.New(idle), throughput: throughput}
}

var _ actor.Dispatcher = (*workerPool)(nil)

// Schedule runs fn on an idle worker, or on a new one.
func (p *workerPool) Schedule(fn func()) { p.Go(fn) }

// Throughput is the number of messages a mailbox processes per pass.
func (p *workerPool) Throughput() int { return p.throughput }

// stop lets the idle workers go (Engine.Close); a Schedule after it still
// runs its function, on a goroutine of its own.
func (p *workerPool) stop() { p.Stop() }
