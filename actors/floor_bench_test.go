package actors

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// hop is a message bounced between two actors.
type hop struct {
	left int
	to   *actor.PID // the other actor
	done *sync.WaitGroup
}

type bouncer struct{ self *actor.PID }

func (a *bouncer) Receive(ctx actor.Context) {
	if h, ok := ctx.Message().(*hop); ok {
		if h.left == 0 {
			h.done.Done()
			return
		}
		next := &hop{left: h.left - 1, to: ctx.Self(), done: h.done}
		ctx.Send(h.to, next)
	}
}

// BenchmarkActorHop is one actor message between two of the engine's
// actors (its worker pool and mailbox), with 128 pairs bouncing at once as
// the pingpong benchmark's conversations do: the floor under each of the
// actor messages a message costs the engine. cpu-µs/hop is the process's
// CPU per message, on all cores.
func BenchmarkActorHop(b *testing.B) {
	const pairs = 128
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	defer sys.Shutdown()
	pool := newWorkerPool(0, 0)
	defer pool.stop()
	props := actor.PropsFromProducer(func() actor.Actor { return &bouncer{} },
		actor.WithDispatcher(pool), actor.WithMailbox(func() actor.Mailbox { return &mailbox{} }))
	var pids [2 * pairs]*actor.PID
	for i := range pids {
		pids[i] = sys.Root.Spawn(props)
	}
	per := max(b.N/pairs, 1)
	var done sync.WaitGroup
	done.Add(pairs)
	b.ResetTimer()
	start := benchCPU(b)
	for i := range pairs {
		sys.Root.Send(pids[2*i], &hop{left: per, to: pids[2*i+1], done: &done})
	}
	done.Wait()
	b.StopTimer()
	b.ReportMetric(float64((benchCPU(b)-start).Nanoseconds())/1e3/float64(per*pairs), "cpu-µs/hop")
}

func benchCPU(tb testing.TB) time.Duration {
	cpu, ok := processCPU()
	if !ok {
		tb.Skip("no process CPU time here")
	}
	return cpu
}
