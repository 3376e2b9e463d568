package actors

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// review20 checks stopAndWait (actors/stopwatch.go) against
// protoactor-go's StopFuture(pid).Wait(), which StopInstallation used before.

func r20System() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
}

// r20Registered counts the registered processes whose id starts with prefix
// ("" for all).
func r20Registered(sys *actor.ActorSystem, prefix string) (n int) {
	for _, m := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		for _, k := range m.Keys() {
			if strings.HasPrefix(k, prefix) {
				n++
			}
		}
	}
	return n
}

func r20IsRegistered(sys *actor.ActorSystem, pid *actor.PID) bool {
	_, ok := sys.ProcessRegistry.GetLocal(pid.Id)
	return ok
}

// r20Parent spawns a parent with one child that blocks in Receive until
// release is closed (the child got a "block" message first).
func r20Parent(t *testing.T, sys *actor.ActorSystem, props func(actor.Producer) *actor.Props) (parent *actor.PID, release chan struct{}) {
	t.Helper()
	release = make(chan struct{})
	busy := make(chan struct{})
	childReady := make(chan *actor.PID, 1)
	child := props(func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(string); ok {
				close(busy)
				<-release
			}
		})
	})
	parent = sys.Root.Spawn(props(func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*actor.Started); ok {
				c := ctx.Spawn(child)
				ctx.Send(c, "block")
				childReady <- c
			}
		})
	}))
	<-childReady
	<-busy
	return parent, release
}

// Q1, live actor with a child blocked in a long Receive: stopAndWait, like
// StopFuture, waits for the child and only then answers, with the parent
// gone from the registry.
func TestReview20LiveParentWaitsForChild(t *testing.T) {
	sys := r20System()
	defer sys.Shutdown()
	parent, release := r20Parent(t, sys, func(p actor.Producer) *actor.Props { return actor.PropsFromProducer(p) })
	done := make(chan error, 1)
	go func() { done <- stopAndWait(sys, parent, 5*time.Second) }()
	select {
	case err := <-done:
		t.Fatalf("stopAndWait answered (%v) while the child was still running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r20IsRegistered(sys, parent) {
		t.Fatal("parent still registered after stopAndWait")
	}
	if n := r20Registered(sys, "stopwatch"); n != 0 {
		t.Fatalf("%d stopwatch processes left", n)
	}
}

// Q1, actor already stopping (someone else's Stop, its child still running):
// protoactor answers a Watch to a stopping actor with Terminated at once, so
// both stopAndWait and StopFuture return before the actor and its child
// have stopped, with the actor still registered. The same for both: not a
// regression, but stopAndWait's comment ("waits until it has terminated (its
// children first)") does not hold here.
func TestReview20AlreadyStoppingAnswersEarly(t *testing.T) {
	sys := r20System()
	defer sys.Shutdown()
	for _, variant := range []string{"stopAndWait", "StopFuture"} {
		parent, release := r20Parent(t, sys, func(p actor.Producer) *actor.Props { return actor.PropsFromProducer(p) })
		sys.Root.Stop(parent) // the first stop: the parent waits for its child
		time.Sleep(50 * time.Millisecond)
		var err error
		start := time.Now()
		if variant == "stopAndWait" {
			err = stopAndWait(sys, parent, 2*time.Second)
		} else {
			err = sys.Root.StopFuture(parent).Wait()
		}
		took := time.Since(start)
		t.Logf("%s on a stopping actor: err=%v after %v, parent still registered: %v", variant, err, took, r20IsRegistered(sys, parent))
		if err != nil || !r20IsRegistered(sys, parent) {
			t.Errorf("%s: expected the early answer (nil, parent registered)", variant)
		}
		close(release)
	}
	time.Sleep(100 * time.Millisecond)
	if n := r20Registered(sys, "stopwatch"); n != 0 {
		t.Fatalf("%d stopwatch processes left", n)
	}
}

// Q1/Q2, concurrent stops on the engine's own mailbox and dispatcher: two
// stopAndWait and a plain Stop race on the same actor, many times. None may
// time out (a missed Terminated), and no stopwatch may stay registered.
func TestReview20ConcurrentStopsNeverMissTerminated(t *testing.T) {
	e := NewEngine(Config{}, persistence.NewMemory(), transport.NewMemory(transport.MemoryOptions{}), func(Message) {})
	defer e.Close()
	sys := e.system
	var timeouts, early atomic.Int64
	const rounds = 300
	for i := range rounds {
		pid := sys.Root.Spawn(e.deps.props(func() actor.Actor {
			return actor.ReceiveFunc(func(ctx actor.Context) {
				if _, ok := ctx.Message().(*actor.Started); ok {
					ctx.Spawn(e.deps.props(func() actor.Actor { return actor.ReceiveFunc(func(actor.Context) {}) }))
				}
			})
		}))
		var wg sync.WaitGroup
		for k := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if k == 2 && i%2 == 0 {
					sys.Root.Stop(pid)
					return
				}
				if err := stopAndWait(sys, pid, 2*time.Second); err != nil {
					timeouts.Add(1)
				} else if r20IsRegistered(sys, pid) {
					early.Add(1) // answered while the actor was stopping, not yet gone
				}
			}()
		}
		wg.Wait()
	}
	time.Sleep(100 * time.Millisecond)
	t.Logf("%d rounds: %d timeouts, %d answers while the actor was still registered", rounds, timeouts.Load(), early.Load())
	if timeouts.Load() != 0 {
		t.Errorf("%d stopAndWait calls timed out", timeouts.Load())
	}
	if n := r20Registered(sys, "stopwatch"); n != 0 {
		t.Errorf("%d stopwatch processes left registered", n)
	}
}

// Q1, an actor that panicked and is restarting (root supervisor: restart)
// while its child still runs: stopAndWait waits for the child, then for the
// actor to be gone.
func TestReview20RestartingActor(t *testing.T) {
	e := NewEngine(Config{}, persistence.NewMemory(), transport.NewMemory(transport.MemoryOptions{}), func(Message) {})
	defer e.Close()
	sys := e.system
	release := make(chan struct{})
	busy := make(chan struct{})
	restarting := make(chan struct{}, 4)
	stopped := make(chan struct{})
	child := e.deps.props(func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(string); ok {
				close(busy)
				<-release
			}
		})
	})
	var once sync.Once
	pid := sys.Root.Spawn(e.deps.props(func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			switch ctx.Message().(type) {
			case *actor.Started:
				once.Do(func() { ctx.Send(ctx.Spawn(child), "block") })
			case *actor.Restarting:
				restarting <- struct{}{}
			case *actor.Stopped:
				close(stopped)
			case int:
				panic("review20")
			}
		})
	}))
	<-busy
	sys.Root.Send(pid, 1)
	<-restarting // the restart waits for the blocked child
	done := make(chan error, 1)
	go func() { done <- stopAndWait(sys, pid, 5*time.Second) }()
	select {
	case err := <-done:
		t.Fatalf("stopAndWait answered (%v) during the restart, the child still running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("stopAndWait returned before Stopped")
	}
	if r20IsRegistered(sys, pid) {
		t.Fatal("actor still registered")
	}
}

// Q2, a Watch that reaches a mailbox after the actor finalized (the
// registry lookup raced the stop): the engine's mailbox still runs system
// messages after the stop, and handleWatch answers Terminated. Done here by
// hand: the process taken before the stop, the Watch posted after it.
func TestReview20WatchAfterFinalizeIsAnswered(t *testing.T) {
	e := NewEngine(Config{}, persistence.NewMemory(), transport.NewMemory(transport.MemoryOptions{}), func(Message) {})
	defer e.Close()
	sys := e.system
	pid := sys.Root.Spawn(e.deps.props(func() actor.Actor { return actor.ReceiveFunc(func(actor.Context) {}) }))
	proc, _ := sys.ProcessRegistry.Get(pid) // taken while alive
	if err := stopAndWait(sys, pid, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	w := &stopWatch{done: make(chan struct{})}
	watcher, _ := sys.ProcessRegistry.Add(w, "stopwatch-late")
	defer sys.ProcessRegistry.Remove(watcher)
	proc.SendSystemMessage(pid, &actor.Watch{Watcher: watcher}) // after finalizeStop
	select {
	case <-w.done:
	case <-time.After(2 * time.Second):
		t.Fatal("a Watch posted to a finalized actor's mailbox was never answered")
	}
}

// Q3/Q4, the timeout path: the watcher is removed, the actor keeps the
// watcher's PID in its watcher set; once it does stop, its Terminated goes to
// the dead letters, nothing stays registered, and the actor is freed.
func TestReview20TimeoutPathFreesActor(t *testing.T) {
	e := NewEngine(Config{}, persistence.NewMemory(), transport.NewMemory(transport.MemoryOptions{}), func(Message) {})
	defer e.Close()
	sys := e.system
	release := make(chan struct{})
	busy := make(chan struct{})
	pid := sys.Root.Spawn(e.deps.props(func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(string); ok {
				close(busy)
				<-release
			}
		})
	}))
	p, _ := sys.ProcessRegistry.Get(pid)
	ref := weak.Make(p.(*actor.ActorProcess))
	p = nil
	sys.Root.Send(pid, "block")
	<-busy
	if err := stopAndWait(sys, pid, 50*time.Millisecond); !errors.Is(err, actor.ErrTimeout) {
		t.Fatalf("err %v, want timeout", err)
	}
	if n := r20Registered(sys, "stopwatch"); n != 0 {
		t.Fatalf("%d stopwatch processes left after the timeout", n)
	}
	close(release)
	pid = nil
	kept := true
	for deadline := time.Now().Add(3 * time.Second); kept && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		runtime.GC()
		runtime.GC()
		kept = ref.Value() != nil
	}
	if kept {
		t.Fatal("actor stopped after a timed-out stopAndWait is still in memory")
	}
}

// Q3, as cmd/ratchetd/internal/loadgen/x3dh.go: a fresh installation
// imports a bundle, sends one message (a full X3DH), the receiver gets it,
// and the sender is stopped. Each stopped sender must be freed (its
// installation actor, and the ActorProcesses of its children).
func TestReview20StoppedSenderIsFreed(t *testing.T) {
	tr := transport.NewMemory(transport.MemoryOptions{})
	defer tr.Close()
	got := make(chan string, 64)
	e := NewEngine(Config{}, persistence.NewMemory(), tr, func(m Message) { got <- string(m.Payload) })
	defer e.Close()
	b, bID, err := e.CreateInstallation(nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Request(b, &messages.BundleRequest{NowUnixNano: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	bundle := res.(*messages.BundleReply).Bundle
	type tracked struct {
		id   string
		refs []weak.Pointer[actor.ActorProcess]
	}
	var all []tracked
	before := r20Registered(e.system, "")
	for i := range 20 {
		a, _, err := e.CreateInstallation(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Request(a, &messages.ImportBundle{Bundle: bundle}); err != nil {
			t.Fatal(err)
		}
		text := fmt.Sprintf("m%d", i)
		res, err := e.Request(a, &messages.SendCommand{PeerIdentity: bID[:], Payload: []byte(text)})
		if rep, _ := res.(*messages.SendReport); err != nil || rep == nil || rep.Error != messages.ErrorCode_OK {
			t.Fatalf("send: %v %v", res, err)
		}
		select {
		case m := <-got:
			if m != text {
				t.Fatalf("got %q, want %q", m, text)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("message not received")
		}
		h, err := e.get(a)
		if err != nil {
			t.Fatal(err)
		}
		// The installation and every process registered under its name
		// (its children: SessionSupervisor, PeerSession, publisher).
		tk := tracked{id: a}
		for _, m := range e.system.ProcessRegistry.LocalPIDs.LocalPIDs {
			for _, k := range m.Keys() {
				if strings.HasPrefix(k, h.pid.Id) {
					v, _ := m.Get(k)
					if ap, ok := v.(*actor.ActorProcess); ok {
						tk.refs = append(tk.refs, weak.Make(ap))
					}
				}
			}
		}
		all = append(all, tk)
		h = nil
		if err := e.StopInstallation(a); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	gcStart := time.Now()
	kept, total := 0, 0
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		runtime.GC()
		runtime.GC()
		kept, total = 0, 0
		for _, tk := range all {
			for _, r := range tk.refs {
				total++
				if r.Value() != nil {
					kept++
				}
			}
		}
		if kept == 0 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d processes tracked over %d stopped senders; %d still in memory (%v after the last stop + 0.1 s); registry %d -> %d, stopwatches %d",
		total, len(all), kept, time.Since(gcStart).Round(time.Millisecond), before, r20Registered(e.system, ""), r20Registered(e.system, "stopwatch"))
	if kept > 0 {
		t.Errorf("%d of %d stopped senders' actor processes still in memory", kept, total)
	}
	if n := r20Registered(e.system, "stopwatch"); n != 0 {
		t.Errorf("%d stopwatch processes left registered", n)
	}
	for _, tk := range all {
		if n := r20Registered(e.system, "installation-"+tk.id); n != 0 {
			t.Errorf("stopped installation %s: %d processes still registered", tk.id, n)
		}
	}
}

// Q1, StopInstallation racing Close: either the stop answers (nil) or the
// engine is closed (ErrClosed); neither waits for the timeout.
func TestReview20StopInstallationRacingClose(t *testing.T) {
	for range 10 {
		tr := transport.NewMemory(transport.MemoryOptions{})
		e := NewEngine(Config{StopTimeout: 3 * time.Second}, persistence.NewMemory(), tr, func(Message) {})
		id, _, err := e.CreateInstallation(nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- e.StopInstallation(id) }()
		e.Close()
		err = <-done
		if took := time.Since(start); took > time.Second || (err != nil && !errors.Is(err, ErrClosed)) {
			t.Fatalf("StopInstallation racing Close: %v after %v", err, took)
		}
		tr.Close()
	}
}
