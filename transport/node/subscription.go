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
	done func(taken bool)
}

func newSubscription(topic string, h transport.Handler) *subscription {
	s := &subscription{topic: topic, handler: h}
	s.cond = sync.NewCond(&s.mu)
	go s.run()
	return s
}

func (s *subscription) push(d transport.Delivery, done func(taken bool)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done(false) // nobody took it: the sender must keep it
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
		taken := false
		if !closed {
			taken = s.handler(j.d) == nil
		}
		j.done(taken)
	}
}

func (s *subscription) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// dispatch hands a delivery to every subscription; the channel receives
// whether all of them took it, once all have processed it.
func dispatch(subs []*subscription, d transport.Delivery) <-chan bool {
	done := make(chan bool, 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	all := true
	wg.Add(len(subs))
	for _, s := range subs {
		s.push(d, func(taken bool) {
			mu.Lock()
			all = all && taken
			mu.Unlock()
			wg.Done()
		})
	}
	go func() {
		wg.Wait()
		done <- all
	}()
	return done
}
