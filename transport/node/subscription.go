package node

import (
	"sync"

	"github.com/ratchetd/ratchetd/transport"
)

// subscription runs one handler in arrival order. A call begins once the
// one before it returned, or called Delivery.Taken: the engine's gateway
// does as soon as the delivery is in its installation's mailbox, so a
// subscription's deliveries are decrypted in order and share group
// commits, instead of waiting one commit each. At most maxPipelined calls
// run at once.
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
	slots := make(chan struct{}, maxPipelined)
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
			j.done(false) // nobody took it: the sender must keep it
			continue
		}
		slots <- struct{}{}
		turn := make(chan struct{})
		var once sync.Once
		pass := func() { once.Do(func() { close(turn) }) }
		d := j.d
		d.Taken = pass
		go func() {
			taken := s.handler(d) == nil
			pass()
			<-slots
			j.done(taken)
		}()
		<-turn
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
