package node

import (
	"sync"

	"github.com/ratchetd/ratchetd/transport"
)

// subscription runs one handler on its own goroutine, in arrival order.
type subscription struct {
	topic   string
	handler transport.Handler

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []job
	closed bool
}

type job struct {
	d    transport.Delivery
	done func()
}

func newSubscription(topic string, h transport.Handler) *subscription {
	s := &subscription{topic: topic, handler: h}
	s.cond = sync.NewCond(&s.mu)
	go s.run()
	return s
}

func (s *subscription) push(d transport.Delivery, done func()) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done()
		return
	}
	s.queue = append(s.queue, job{d, done})
	s.cond.Signal()
	s.mu.Unlock()
}

func (s *subscription) run() {
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
		if !closed {
			s.handler(j.d)
		}
		j.done()
	}
}

func (s *subscription) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// dispatch hands a delivery to every subscription; the channel closes once
// all have processed it.
func dispatch(subs []*subscription, d transport.Delivery) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(len(subs))
	for _, s := range subs {
		s.push(d, wg.Done)
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}
