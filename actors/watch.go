package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// topicWatch routes a transport.Watcher's news to the Installations whose
// outbox lanes back off on those topics. An Installation registers a topic
// when the first of its failing lanes publishes to it and removes it when
// the last one recovers, is forgotten, or the Installation stops or
// restarts; a topic nobody registered costs one map lookup.
type topicWatch struct {
	root *actor.RootContext

	mu sync.Mutex
	m  map[string]map[string]*actor.PID // topic -> installation id -> its PID
}

func newTopicWatch(root *actor.RootContext) *topicWatch {
	return &topicWatch{root: root, m: map[string]map[string]*actor.PID{}}
}

// start subscribes w to tr's news if tr is a transport.Watcher; the
// returned func (never nil) unsubscribes it.
func (w *topicWatch) start(tr transport.Transport) func() {
	if tw, ok := tr.(transport.Watcher); ok {
		return tw.WatchSubscribers(w.heard)
	}
	return func() {}
}

func (w *topicWatch) add(topic, inst string, pid *actor.PID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m[topic] == nil {
		w.m[topic] = map[string]*actor.PID{}
	}
	w.m[topic][inst] = pid
}

func (w *topicWatch) remove(topic, inst string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if delete(w.m[topic], inst); len(w.m[topic]) == 0 {
		delete(w.m, topic)
	}
}

// heard sends each registered Installation the heard topics it watches,
// in one message. It only sends: it never blocks the transport.
func (w *topicWatch) heard(topics []string) {
	w.mu.Lock()
	var to map[string]*messages.TopicsHeard
	var pids map[string]*actor.PID
	for _, t := range topics {
		for inst, pid := range w.m[t] {
			if to == nil {
				to, pids = map[string]*messages.TopicsHeard{}, map[string]*actor.PID{}
			}
			if to[inst] == nil {
				to[inst], pids[inst] = &messages.TopicsHeard{}, pid
			}
			to[inst].Topics = append(to[inst].Topics, t)
		}
	}
	w.mu.Unlock()
	for inst, m := range to {
		w.root.Send(pids[inst], m)
	}
}
