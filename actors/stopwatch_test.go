package actors

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// stopAndWait answers once the actor has stopped (its Stopped handled),
// answers at once for a pid already gone, gives up after its timeout on an
// actor that does not stop, and leaves no watcher registered behind it.
func TestStopAndWait(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil)) // the dead letters of the second stop
	}))
	defer sys.Shutdown()
	registered := func() (n int) {
		for _, m := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
			n += m.Count()
		}
		return n
	}

	stopped := make(chan struct{})
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Stopped); ok {
			close(stopped)
		}
	}))
	before := registered()
	if err := stopAndWait(sys, pid, 5*time.Second); err != nil {
		t.Fatalf("live actor: %v", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("stopAndWait returned before the actor stopped")
	}
	if got := registered(); got != before-1 {
		t.Fatalf("%d processes registered after the stop, want %d (the actor gone, no watcher left)", got, before-1)
	}

	start := time.Now()
	if err := stopAndWait(sys, pid, 5*time.Second); err != nil {
		t.Fatalf("pid already gone: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("pid already gone: answered after %v", took)
	}

	release := make(chan struct{})
	busy := make(chan struct{})
	stuck := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(string); ok {
			close(busy)
			<-release // the stop waits behind this message
		}
	}))
	sys.Root.Send(stuck, "block")
	<-busy
	before = registered()
	if err := stopAndWait(sys, stuck, 50*time.Millisecond); !errors.Is(err, actor.ErrTimeout) {
		t.Fatalf("actor that does not stop: %v, want %v", err, actor.ErrTimeout)
	}
	if got := registered(); got != before {
		t.Fatalf("%d processes registered after the timeout, want %d (no watcher left)", got, before)
	}
	close(release)
}
