package node

import (
	"errors"
	"sync"

	"github.com/ratchetd/ratchetd/transport"
)

// subscription runs one handler in arrival order (transport.InOrder). A
// call begins once the one before it returned, or called Delivery.Taken:
// the engine's gateway does as soon as the delivery is in its
// installation's mailbox, so a subscription's deliveries are decrypted in
// order and share group commits, instead of waiting one commit each. At
// most maxPipelined calls run at once.
type subscription struct {
	topic   string
	handler transport.Handler

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []job
	closed bool
}

// maxPipelined bounds a subscription's handler calls in progress (each
// waits for its delivery's commit); what one peer has in flight is bounded
// by MaxInflightPerPeer anyway.
const maxPipelined = 256

type job struct {
	d    transport.Delivery
	done func(outcome)
}

// outcome is what a subscription's handler made of a delivery.
type outcome int

const (
	refused outcome = iota // not taken: the sender must keep it
	taken                  // taken by its recipient
	notMine                // not for this subscriber (transport.ErrNotRecipient)
)

func outcomeOf(err error) outcome {
	switch {
	case err == nil:
		return taken
	case errors.Is(err, transport.ErrNotRecipient):
		return notMine
	}
	return refused
}

func newSubscription(topic string, h transport.Handler) *subscription {
	s := &subscription{topic: topic, handler: h}
	s.cond = sync.NewCond(&s.mu)
	go s.run()
	return s
}

func (s *subscription) push(d transport.Delivery, done func(outcome)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done(refused) // nobody took it: the sender must keep it
		return
	}
	s.queue = append(s.queue, job{d, done})
	s.cond.Signal()
	s.mu.Unlock()
}

func (s *subscription) run() {
	q := transport.NewInOrder(maxPipelined)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closed {
			s.cond.Wait()
		}
		if len(s.queue) == 0 {
			s.mu.Unlock()
			return
		}
		j := s.queue[0]
		s.queue[0] = job{}
		s.queue = s.queue[1:]
		closed := s.closed
		s.mu.Unlock()
		if closed {
			j.done(refused) // nobody took it: the sender must keep it
			continue
		}
		t := q.Next()
		go func() {
			t.Wait()
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed { // cancelled while it waited: never handed over
				t.Done()
				j.done(refused)
				return
			}
			d := j.d
			d.Taken = t.Pass
			o := outcomeOf(s.handler(d))
			t.Done()
			j.done(o)
		}()
	}
}

func (s *subscription) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// dispatched is what a node's subscribers made of a delivery: accepted, if
// none refused it; recipient, if one of them was its recipient and took it.
type dispatched struct{ accepted, recipient bool }

// dispatch hands a delivery to every subscription; the channel receives
// the outcome once all have processed it.
func dispatch(subs []*subscription, d transport.Delivery) <-chan dispatched {
	done := make(chan dispatched, 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	r := dispatched{accepted: true}
	wg.Add(len(subs))
	for _, s := range subs {
		s.push(d, func(o outcome) {
			mu.Lock()
			r.accepted = r.accepted && o != refused
			r.recipient = r.recipient || o == taken
			mu.Unlock()
			wg.Done()
		})
	}
	go func() {
		wg.Wait()
		done <- r
	}()
	return done
}
