package loadgen

import (
	"context"
	"sync"

	"github.com/ratchetd/ratchetd"
)

// burstWindow bounds a burst conversation's messages in flight: long runs
// without a reply, but not an unbounded queue (the latency then measures
// the engine, not how far ahead the sender ran). It stays well below
// MaxSkip (1000), so even a reordering transport could not break a run.
const burstWindow = 128

// conversation is a pair of accounts that have completed a handshake.
type conversation struct {
	a, b       *ratchetd.Account
	aGot, bGot signal  // any message received (setup, pingpong)
	win        *window // burst: a's messages in flight
}

// setupPairs creates n confirmed conversations between fresh accounts.
func setupPairs(r *run) ([]*conversation, error) {
	convs := make([]*conversation, r.cfg.Sessions)
	err := parallel(len(convs), setupWorkers, func(i int) error {
		a, err := r.eng.CreateAccount()
		if err != nil {
			return err
		}
		b, err := r.eng.CreateAccount()
		if err != nil {
			return err
		}
		c := &conversation{a: a, b: b, aGot: newSignal(), bGot: newSignal(), win: newWindow(burstWindow)}
		r.route(a.InstallationID(), func(ratchetd.Message) { c.aGot.notify() })
		r.route(b.InstallationID(), func(m ratchetd.Message) {
			if _, _, ok := parse(m.Payload); ok {
				c.win.release()
			}
			c.bGot.notify()
		})
		if err := handshake(a, b, c.aGot, c.bGot); err != nil {
			return err
		}
		convs[i] = c
		r.conversations.Add(1)
		return nil
	})
	return convs, err
}

// concurrently runs f(0..n-1), each on its own goroutine: one sender per
// conversation, as independent clients would be.
func concurrently(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i)
		}()
	}
	wg.Wait()
}

// burst: one side of each conversation sends long runs, the other only
// decrypts — the symmetric ratchet (a KDF chain step per message, no DH).
type burst struct{ convs []*conversation }

func (s *burst) setup(_ context.Context, r *run) (err error) {
	s.convs, err = setupPairs(r)
	return err
}

func (s *burst) drive(_ context.Context, r *run) error {
	concurrently(r.cfg.Senders*len(s.convs), func(i int) {
		c := s.convs[i%len(s.convs)]
		for r.take(1) {
			if err := c.win.acquire(1, r.stop, receiveTimeout); err != nil {
				if err != errStopped {
					r.probe.fail(err)
				}
				return
			}
			if _, err := r.send(c.a, c.b, i%len(s.convs)); err != nil {
				c.win.release()
			}
		}
	})
	return nil
}

func (s *burst) ceiling() primitive { return symmetric }

// pingpong: strict alternation, each side waits for the other's message
// before it answers — a DH ratchet step on every message.
type pingpong struct{ convs []*conversation }

func (s *pingpong) setup(_ context.Context, r *run) (err error) {
	s.convs, err = setupPairs(r)
	return err
}

func (s *pingpong) drive(_ context.Context, r *run) error {
	concurrently(len(s.convs), func(i int) {
		c := s.convs[i]
		from, to, got := c.a, c.b, c.bGot
		for r.take(1) {
			if _, err := r.send(from, to, i); err != nil {
				return
			}
			// The message is on its way: wait for it even past the
			// deadline, so the drain finds nothing half-done.
			if err := got.wait(nil, receiveTimeout); err != nil {
				r.probe.fail(err)
				return
			}
			if from == c.a {
				from, to, got = c.b, c.a, c.aGot
			} else {
				from, to, got = c.a, c.b, c.bGot
			}
		}
	})
	return nil
}

func (s *pingpong) ceiling() primitive { return alternating }

func (s *burst) senders() int { return len(s.convs) }

func (s *pingpong) senders() int { return len(s.convs) }
