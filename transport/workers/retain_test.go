package workers

import (
	"runtime"
	"testing"
	"time"
	"weak"
)

type payload struct{ b [1 << 10]byte }

// TestPoolDoesNotRetain: an idle worker keeps nothing of the functions it
// ran (an actor's mailbox, a delivery) alive.
func TestPoolDoesNotRetain(t *testing.T) {
	p := New(time.Hour)
	defer p.Stop()
	var refs []weak.Pointer[payload]
	for range 16 {
		obj := &payload{}
		refs = append(refs, weak.Make(obj))
		done := make(chan struct{})
		p.Go(func() {
			obj.b[0]++
			close(done)
		})
		<-done
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	runtime.GC()
	kept := 0
	for _, r := range refs {
		if r.Value() != nil {
			kept++
		}
	}
	if kept > 0 {
		t.Fatalf("%d of %d objects kept by idle workers (%d live)", kept, len(refs), p.Live())
	}
}
