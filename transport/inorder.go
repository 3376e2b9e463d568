package transport

import "sync"

// InOrder hands one subscription's deliveries to its handler in their
// arrival order, with several in flight at once: each delivery may first do
// work of its own (parse, recover the signature) in parallel with the
// others, then waits its turn, which comes once the delivery before it
// called Delivery.Taken, returned, or never reached the handler. A receiver
// that queues a delivery and calls Taken before it waits for the outcome
// (the engine's gateway) so has the next ones queued behind it, in order,
// and commits them together. Both transports deliver this way.
type InOrder struct {
	slots chan struct{}
	last  chan struct{} // closed once the last place taken passed its turn
	wg    sync.WaitGroup
}

// NewInOrder allows inflight deliveries at once (at least one).
func NewInOrder(inflight int) *InOrder {
	return &InOrder{slots: make(chan struct{}, max(inflight, 1)), last: passedTurn}
}

// passedTurn is the turn before the first delivery.
var passedTurn = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Turn is one delivery's place in the order.
type Turn struct {
	prev <-chan struct{}
	next chan struct{}
	once sync.Once
	q    *InOrder
}

// Next takes the next place, once fewer than inflight deliveries are in
// flight. Places are taken from one goroutine, in arrival order.
func (q *InOrder) Next() *Turn {
	q.slots <- struct{}{}
	q.wg.Add(1)
	t := &Turn{prev: q.last, next: make(chan struct{}), q: q}
	q.last = t.next
	return t
}

// Wait returns once the delivery before this one passed its turn.
func (t *Turn) Wait() { <-t.prev }

// Pass lets the next delivery go to the handler (Delivery.Taken). It may
// be called more than once.
func (t *Turn) Pass() { t.once.Do(func() { close(t.next) }) }

// Done ends the delivery: it passes the turn if that was not done (once
// the one before passed: order holds even for a delivery that never
// waited), and frees its place. Every Turn from Next must be Done, exactly
// once.
func (t *Turn) Done() {
	<-t.prev
	t.Pass()
	<-t.q.slots
	t.q.wg.Done()
}

// Drain waits until every delivery taken is Done.
func (q *InOrder) Drain() { q.wg.Wait() }
