package actors

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/actors/deadline"
)

type echoRequest struct {
	n     int
	delay time.Duration
}

// TestReplySlots: every request gets its own reply, from many goroutines at
// once; a late reply abandons its slot (never reused, the late reply read
// by no one); a request to a stopped actor ends with ErrDeadLetter.
func TestReplySlots(t *testing.T) {
	sys := actor.NewActorSystem()
	t.Cleanup(sys.Shutdown)
	echo := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*echoRequest); ok {
			if m.delay > 0 {
				time.Sleep(m.delay)
			}
			ctx.Respond(m.n)
		}
	}))
	long := deadline.New(5 * time.Second)
	defer long.Stop()
	r := &replySlots{sys: sys, waits: long}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				n := g*1000 + i
				res, err := r.request(echo, &echoRequest{n: n})
				if err != nil || res != n {
					errs <- fmt.Errorf("request %d: %v, %v", n, res, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if r.n > 16 {
		t.Errorf("%d slots made for 16 goroutines: not reused", r.n)
	}

	// A late reply: the slot is abandoned, the next request gets another
	// one and its own reply, not the late one.
	made := r.n
	r.free = nil
	r.waits = deadline.New(50 * time.Millisecond)
	if _, err := r.request(echo, &echoRequest{n: -1, delay: 200 * time.Millisecond}); !errors.Is(err, actor.ErrTimeout) {
		t.Fatalf("late reply: %v, want ErrTimeout", err)
	}
	r.waits.Stop()
	r.waits = long
	if len(r.free) != 0 {
		t.Fatal("an abandoned slot went back to the pool")
	}
	if res, err := r.request(echo, &echoRequest{n: 7}); err != nil || res != 7 {
		t.Fatalf("after a late reply: %v, %v; want 7", res, err)
	}
	if r.n != made+2 {
		t.Errorf("%d slots made, want %d", r.n, made+2)
	}

	sys.Root.Stop(echo)
	time.Sleep(50 * time.Millisecond)
	if _, err := r.request(echo, &echoRequest{n: 8}); !errors.Is(err, actor.ErrDeadLetter) {
		t.Fatalf("request to a stopped actor: %v, want ErrDeadLetter", err)
	}
}
