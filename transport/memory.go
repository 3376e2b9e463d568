package transport

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport/workers"
)

// Faults are injected by the in-memory transport, each a probability in
// [0, 1], drawn from a seeded generator so that a run is reproducible.
type Faults struct {
	Loss      float64 // an envelope is dropped on publish
	Duplicate float64 // an envelope is delivered twice
	Reorder   float64 // a delivery is taken from a random place in the queue
	Seed      uint64
}

// MemoryOptions configure an in-memory transport.
type MemoryOptions struct {
	Faults Faults
	// Manual holds every envelope until the test calls Deliver, DeliverOne
	// or DeliverAll, which run the handlers on the caller's goroutine: a
	// test then controls the schedule completely.
	Manual bool
	// MaxPayload bounds envelopes (DefaultMaxPayload when zero).
	MaxPayload int
	// Concurrency is how many deliveries one subscription has in flight in
	// async mode (DefaultConcurrency when zero): their signatures are
	// verified in parallel, and a handler that calls Delivery.Taken gets the
	// next delivery, in order, before it returns. A receiver that
	// acknowledges only what it committed then still has several
	// deliveries to commit together. A handler that blocks without calling
	// Taken holds up its subscription's later deliveries.
	Concurrency int
}

// DefaultConcurrency of an async subscription. Each delivery in flight
// waits until the receiver has processed it — for a ratchet message, until
// its session's batch is committed — so this bounds what one subscription's
// receiver can commit at once. With 8, a durable burst conversation
// received at most 8 messages per commit cycle: the subscription queue,
// not the engine, set its latency (p50 32–47 ms, 1.5 cores busy); with 64,
// p50 12–14 ms and 1.6–1.7 cores busy, in the same session's runs.
const DefaultConcurrency = 64

// MemoryStats counts what the transport did.
type MemoryStats struct {
	Published, Delivered, Dropped, Duplicated, Rejected int64
	// Refused: deliveries a handler did not take.
	Refused int64
}

// Memory is an in-process transport: topics, publish, subscribe. Envelopes
// are serialized on publish and parsed and verified on delivery, as they
// would be on a network.
type Memory struct {
	opts MemoryOptions

	mu      sync.Mutex
	rng     *rand.Rand
	subs    map[string][]*subscription
	pending []queued // manual mode
	closed  bool
	// deliveries runs the async deliveries of every subscription on
	// reused goroutines (a goroutine each grew its stack every time:
	// runtime.copystack was about 1 % of a durable pingpong profile).
	deliveries *workers.Pool

	published, delivered, dropped, duplicated, rejected, refused atomic.Int64
}

type queued struct {
	sub *subscription
	raw []byte
}

type subscription struct {
	topic   string
	handler Handler
	// async mode: a goroutine drains the queue.
	mu        sync.Mutex
	cond      *sync.Cond
	queue     [][]byte
	cancelled bool
	done      chan struct{}
}

// NewMemory returns an in-memory transport.
func NewMemory(opts MemoryOptions) *Memory {
	return &Memory{
		opts: opts,
		rng:  rand.New(rand.NewPCG(opts.Faults.Seed, 0x7261746368657464)),
		subs: make(map[string][]*subscription),
		// Idle delivery workers go by halves every workers.DefaultIdle.
		deliveries: workers.New(0),
	}
}

// Publish serializes env and queues it for every subscriber of its topic,
// subject to the injected faults.
func (m *Memory) Publish(env *messages.Envelope) error {
	raw, err := proto.Marshal(env)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.published.Add(1)
	for _, s := range m.subs[env.Topic] {
		if m.chance(m.opts.Faults.Loss) {
			m.dropped.Add(1)
			continue
		}
		copies := 1
		if m.chance(m.opts.Faults.Duplicate) {
			copies = 2
			m.duplicated.Add(1)
		}
		for range copies {
			if m.opts.Manual {
				m.pending = append(m.pending, queued{sub: s, raw: raw})
			} else {
				s.push(raw, m)
			}
		}
	}
	return nil
}

func (m *Memory) chance(p float64) bool { return p > 0 && m.rng.Float64() < p }

// Subscribe registers a handler for a topic.
func (m *Memory) Subscribe(topic string, h Handler) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	s := &subscription{topic: topic, handler: h, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	m.subs[topic] = append(m.subs[topic], s)
	if !m.opts.Manual {
		go s.run(m)
	} else {
		close(s.done)
	}
	return func() { m.unsubscribe(s) }, nil
}

func (m *Memory) unsubscribe(s *subscription) {
	m.mu.Lock()
	// slices.DeleteFunc clears the slot it frees: a slice shortened in
	// place with append kept pointing at the subscription, its handler and,
	// through the handler's PID, the whole receiving actor (every stopped
	// installation stayed in memory, about 7 KiB each). Readers of m.subs
	// hold m.mu. (After Close, m.subs is nil: there is nothing to remove.)
	if kept := slices.DeleteFunc(m.subs[s.topic], func(x *subscription) bool { return x == s }); len(kept) > 0 {
		m.subs[s.topic] = kept
	} else {
		delete(m.subs, s.topic)
	}
	// In manual mode what is held for a cancelled subscription is lost, as
	// it is for a process that went down.
	kept := m.pending[:0]
	for _, q := range m.pending {
		if q.sub == s {
			m.dropped.Add(1)
			continue
		}
		kept = append(kept, q)
	}
	clear(m.pending[len(kept):])
	m.pending = kept
	m.mu.Unlock()
	s.mu.Lock()
	s.cancelled = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// push queues raw for the subscription's goroutine; with reordering it goes
// to a random place in the queue. Called with m.mu held.
func (s *subscription) push(raw []byte, m *Memory) {
	s.mu.Lock()
	if m.chance(m.opts.Faults.Reorder) && len(s.queue) > 0 {
		i := m.rng.IntN(len(s.queue))
		s.queue = append(s.queue[:i], append([][]byte{raw}, s.queue[i:]...)...)
	} else {
		s.queue = append(s.queue, raw)
	}
	s.cond.Signal()
	s.mu.Unlock()
}

func (s *subscription) run(m *Memory) {
	defer close(s.done)
	n := m.opts.Concurrency
	if n <= 0 {
		n = DefaultConcurrency
	}
	q := NewInOrder(n)
	defer q.Drain()
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.cancelled {
			s.cond.Wait()
		}
		if s.cancelled {
			s.mu.Unlock()
			return
		}
		raw := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		t := q.Next()
		m.deliveries.Go(func() {
			defer t.Done()
			m.deliver(s, raw, t)
		})
	}
}

// deliver parses and verifies an envelope (in parallel with the
// subscription's other deliveries: the signature recovery is most of the
// cost), waits for its turn, and runs the handler. The handler gets
// the deliveries in their queue order: delivered in parallel, a
// conversation's messages reached the receiver out of order, and three in
// four of a durable burst's message keys were stored as skipped and deleted
// again. A bad envelope is counted and dropped: it never reaches the engine.
func (m *Memory) deliver(s *subscription, raw []byte, t *Turn) {
	var env messages.Envelope
	var d Delivery
	err := proto.Unmarshal(raw, &env)
	if err == nil {
		d, err = Open(&env, m.opts.MaxPayload)
	}
	// Every delivery waits for its turn, a bad one too: passing the turn
	// on early would let the next delivery overtake the one before.
	t.Wait()
	if err != nil {
		m.rejected.Add(1)
		return
	}
	m.delivered.Add(1)
	d.Taken = t.Pass
	if err := s.handler(d); err != nil && !errors.Is(err, ErrNotRecipient) {
		m.refused.Add(1) // the memory transport does not deliver again
	}
}

// Pending is the number of envelopes held in manual mode.
func (m *Memory) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// DeliverOne delivers one held envelope (manual mode): the oldest, or with
// the Reorder probability a random one. It reports whether one was held.
func (m *Memory) DeliverOne() bool {
	m.mu.Lock()
	if len(m.pending) == 0 {
		m.mu.Unlock()
		return false
	}
	i := 0
	if m.chance(m.opts.Faults.Reorder) {
		i = m.rng.IntN(len(m.pending))
	}
	q := m.pending[i]
	m.pending = append(m.pending[:i], m.pending[i+1:]...)
	m.mu.Unlock()
	t := NewInOrder(1).Next() // on the caller's goroutine: nothing before it
	m.deliver(q.sub, q.raw, t)
	t.Done()
	return true
}

// DeliverAll delivers held envelopes, including those published while it
// runs, until none is left or max deliveries were made (max <= 0: no bound).
// It returns the number delivered.
func (m *Memory) DeliverAll(max int) int {
	n := 0
	for (max <= 0 || n < max) && m.DeliverOne() {
		n++
	}
	return n
}

// DropAll discards every held envelope (manual mode), as a lossy network
// would. It returns how many were dropped.
func (m *Memory) DropAll() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.pending)
	m.pending = nil
	m.dropped.Add(int64(n))
	return n
}

// DropOne discards one held envelope chosen by the seeded generator (manual
// mode) and returns it, or nil when none is held.
func (m *Memory) DropOne() *messages.Envelope {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 {
		return nil
	}
	i := m.rng.IntN(len(m.pending))
	q := m.pending[i]
	m.pending = append(m.pending[:i], m.pending[i+1:]...)
	m.dropped.Add(1)
	var env messages.Envelope
	if proto.Unmarshal(q.raw, &env) != nil {
		return nil
	}
	return &env
}

// Inject queues raw bytes for every subscriber of topic as if they came from
// the network, bypassing Publish (adversarial tests).
func (m *Memory) Inject(topic string, raw []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.subs[topic] {
		if m.opts.Manual {
			m.pending = append(m.pending, queued{sub: s, raw: raw})
		} else {
			s.push(raw, m)
		}
	}
}

// Stats returns the counters.
func (m *Memory) Stats() MemoryStats {
	return MemoryStats{
		Published: m.published.Load(), Delivered: m.delivered.Load(), Dropped: m.dropped.Load(),
		Duplicated: m.duplicated.Load(), Rejected: m.rejected.Load(), Refused: m.refused.Load(),
	}
}

// Close stops every subscription.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var all []*subscription
	for _, l := range m.subs {
		all = append(all, l...)
	}
	m.subs = nil
	m.pending = nil
	m.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		s.cancelled = true
		s.cond.Broadcast()
		s.mu.Unlock()
		<-s.done
	}
	m.deliveries.Stop()
	return nil
}
