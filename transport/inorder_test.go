package transport

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestInOrder: deliveries whose own work takes random times reach the
// handler in the order their places were taken; at most inflight are in
// flight; a delivery that passes its turn early (Taken) lets the next one
// reach the handler before it returns; Drain waits for all.
func TestInOrder(t *testing.T) {
	const inflight, n = 8, 500
	q := NewInOrder(inflight)
	var mu sync.Mutex
	var order []int
	var now, most atomic.Int64
	for i := range n {
		turn := q.Next()
		if c := now.Add(1); c > most.Load() {
			most.Store(c)
		}
		go func() {
			defer func() { now.Add(-1); turn.Done() }()
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond) // its own work
			turn.Wait()
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			if i%2 == 0 {
				turn.Pass() // taken: the next may begin before this returns
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			}
		}()
	}
	q.Drain()
	if len(order) != n {
		t.Fatalf("%d deliveries reached the handler, want %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("delivery %d reached the handler in place %d", v, i)
		}
	}
	if m := most.Load(); m > inflight {
		t.Fatalf("%d in flight at once, want at most %d", m, inflight)
	}
}

// TestInOrderPassLetsNextBegin: a delivery that passes its turn (Taken)
// and then waits for the next one to reach the handler does not deadlock.
func TestInOrderPassLetsNextBegin(t *testing.T) {
	q := NewInOrder(2)
	first, second := q.Next(), q.Next()
	entered := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer first.Done()
		first.Wait()
		first.Pass()
		select {
		case <-entered:
			close(done)
		case <-time.After(5 * time.Second):
		}
	}()
	go func() {
		defer second.Done()
		second.Wait()
		close(entered)
	}()
	q.Drain()
	select {
	case <-done:
	default:
		t.Fatal("the second delivery did not begin while the first, having passed its turn, was still in the handler")
	}
}
