package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// stopWatch is a process that watches one actor and closes done when the
// actor's Terminated arrives: protoactor-go's StopFuture without its
// future. That future arms a 10 s time.AfterFunc; stopped, the timer stays
// in the runtime's timer heap until its time comes, and through its closure
// the future and the Terminated message it keeps, whose PID caches the
// stopped actor's process, and with it the actor's whole state. Every
// stopped installation stayed in memory for 10 s: an x3dh bench, which
// stops an account per message, could keep up to about 14 000 of them
// (10 s at 1 400 a second), and the garbage collector marked them again
// in every cycle. A stopWatch keeps nothing
// once it has answered, and its own timer holds only its channel.
type stopWatch struct {
	done chan struct{}
	once sync.Once
}

func (w *stopWatch) SendUserMessage(*actor.PID, any) {}

func (w *stopWatch) SendSystemMessage(_ *actor.PID, message any) {
	if _, ok := message.(*actor.Terminated); ok {
		w.once.Do(func() { close(w.done) })
	}
}

func (w *stopWatch) Stop(*actor.PID) {}

// stopAndWait stops pid and waits until it has terminated (its children
// first, as protoactor stops them), or timeout (actor.ErrTimeout). A pid
// already gone answers at once: protoactor answers a Watch that reaches a
// dead actor with its Terminated. So does an actor already stopping (its
// own supervisor gave up on it, or another stop came first): protoactor
// answers the Watch at once then, while its children may still be
// stopping, as StopFuture did (TestReview20AlreadyStoppingAnswersEarly).
func stopAndWait(sys *actor.ActorSystem, pid *actor.PID, timeout time.Duration) error {
	w := &stopWatch{done: make(chan struct{})}
	watcher, _ := sys.ProcessRegistry.Add(w, "stopwatch"+sys.ProcessRegistry.NextID())
	defer sys.ProcessRegistry.Remove(watcher)
	target, _ := sys.ProcessRegistry.Get(pid) // the dead letters for a pid gone
	target.SendSystemMessage(pid, &actor.Watch{Watcher: watcher})
	sys.Root.Stop(pid)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return nil
	case <-t.C:
		return actor.ErrTimeout
	}
}
