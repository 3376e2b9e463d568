package chaos

import (
	"bytes"
	"encoding/binary"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// spool is a durable loopback transport for the crash harness: every
// published envelope is committed to the store before Publish returns, and
// each subscription keeps a durable cursor advanced after its handler
// returned (that is, after the engine processed the envelope). So an
// envelope the transport accepted survives a SIGKILL, and is delivered at
// least once; a repeat is recognisable (same envelope id) and the ratchet
// reports it as a duplicate.
type spool struct {
	store persistence.Store

	mu      sync.Mutex
	seq     uint64
	topics  map[string]*topicRunner
	closed  bool
	done    sync.WaitGroup
	stopped chan struct{}
}

// topicRunner delivers one topic's envelopes to every handler of the topic,
// then advances the topic's durable cursor.
type topicRunner struct {
	mu       sync.Mutex
	handlers map[int]transport.Handler
	nextID   int
	wake     chan struct{}
}

const (
	queuePrefix  = 'Q'
	cursorPrefix = 'C'
)

func queueKey(topic string, seq uint64) []byte {
	k := append([]byte{queuePrefix}, binary.AppendUvarint(nil, uint64(len(topic)))...)
	k = append(k, topic...)
	return binary.BigEndian.AppendUint64(k, seq)
}

func queueTopicPrefix(topic string) []byte {
	k := append([]byte{queuePrefix}, binary.AppendUvarint(nil, uint64(len(topic)))...)
	return append(k, topic...)
}

func cursorKey(topic string) []byte {
	k := append([]byte{cursorPrefix}, binary.AppendUvarint(nil, uint64(len(topic)))...)
	return append(k, topic...)
}

func newSpool(store persistence.Store) (*spool, error) {
	s := &spool{store: store, topics: map[string]*topicRunner{}, stopped: make(chan struct{})}
	// The next sequence number follows the largest one stored.
	err := store.Scan([]byte{queuePrefix}, func(k, _ []byte) error {
		if seq := binary.BigEndian.Uint64(k[len(k)-8:]); seq >= s.seq {
			s.seq = seq + 1
		}
		return nil
	})
	return s, err
}

func (s *spool) Publish(env *messages.Envelope) error {
	raw, err := proto.Marshal(env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return transport.ErrClosed
	}
	seq := s.seq
	s.seq++
	// Committed under the lock so that sequence order is commit order.
	err = s.store.Commit([]persistence.Write{{Key: queueKey(env.Topic, seq), Value: raw}})
	t := s.topics[env.Topic]
	s.mu.Unlock()
	if t != nil {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
	return err
}

// PublishConfirm makes the spool a confirming transport, as the networked
// one is, so that the harness kills the engine's outbox path too: the
// envelope is confirmed once it is durably in the spool.
func (s *spool) PublishConfirm(env *messages.Envelope, done func(error)) {
	err := s.Publish(env)
	go done(err)
}

func (s *spool) Subscribe(topic string, h transport.Handler) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, transport.ErrClosed
	}
	t := s.topics[topic]
	if t == nil {
		t = &topicRunner{handlers: map[int]transport.Handler{}, wake: make(chan struct{}, 1)}
		s.topics[topic] = t
		s.done.Add(1)
		go s.run(topic, t)
	}
	t.mu.Lock()
	id := t.nextID
	t.nextID++
	t.handlers[id] = h
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return func() {
		t.mu.Lock()
		delete(t.handlers, id)
		t.mu.Unlock()
	}, nil
}

// run delivers the topic's envelopes after the durable cursor, in order.
func (s *spool) run(topic string, t *topicRunner) {
	defer s.done.Done()
	ck := cursorKey(topic)
	var next uint64
	if v, err := s.store.Get(ck); err == nil && len(v) == 8 {
		next = binary.BigEndian.Uint64(v)
	}
	prefix := queueTopicPrefix(topic)
	for {
		var batch [][]byte
		var seqs []uint64
		s.store.Scan(prefix, func(k, v []byte) error {
			seq := binary.BigEndian.Uint64(k[len(k)-8:])
			if seq >= next && len(batch) < 64 {
				batch = append(batch, bytes.Clone(v))
				seqs = append(seqs, seq)
			}
			return nil
		})
		for i, raw := range batch {
			select {
			case <-s.stopped:
				return
			default:
			}
			t.mu.Lock()
			hs := make([]transport.Handler, 0, len(t.handlers))
			for _, h := range t.handlers {
				hs = append(hs, h)
			}
			t.mu.Unlock()
			if len(hs) == 0 {
				break // nobody listens yet: keep it for later
			}
			var env messages.Envelope
			taken := true
			if proto.Unmarshal(raw, &env) == nil {
				if d, err := transport.Open(&env, 0); err == nil {
					for _, h := range hs {
						taken = h(d) == nil && taken
					}
				}
			}
			if !taken {
				break // not taken (a commit failed): delivered again later
			}
			next = seqs[i] + 1
			s.store.Commit([]persistence.Write{{Key: ck, Value: binary.BigEndian.AppendUint64(nil, next)}})
		}
		select {
		case <-s.stopped:
			return
		case <-t.wake:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pending counts envelopes not yet delivered on the subscribed topics.
func (s *spool) pending() int {
	s.mu.Lock()
	var topics []string
	for t := range s.topics {
		topics = append(topics, t)
	}
	s.mu.Unlock()
	total := 0
	for _, topic := range topics {
		var next uint64
		if v, err := s.store.Get(cursorKey(topic)); err == nil && len(v) == 8 {
			next = binary.BigEndian.Uint64(v)
		}
		s.store.Scan(queueTopicPrefix(topic), func(k, _ []byte) error {
			if binary.BigEndian.Uint64(k[len(k)-8:]) >= next {
				total++
			}
			return nil
		})
	}
	return total
}

func (s *spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stopped)
	s.mu.Unlock()
	s.done.Wait()
	return nil
}

// envelopes calls fn for every envelope ever published (verification).
func envelopes(store persistence.Store, fn func(*messages.Envelope)) error {
	return store.Scan([]byte{queuePrefix}, func(_, v []byte) error {
		var env messages.Envelope
		if proto.Unmarshal(v, &env) == nil {
			fn(&env)
		}
		return nil
	})
}
