package ratchetd_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// watchedHung is a hungWatch that is also a transport.Watcher: the test
// says when subscribers of a topic appear (hear), as the networked node
// does when a peer node comes back.
type watchedHung struct {
	*hungWatch
	mu     sync.Mutex
	fns    map[int]func([]string)
	n      int
	topics map[string]map[string]bool // recipient -> topics published to
}

var _ transport.Watcher = (*watchedHung)(nil)

func (w *watchedHung) WatchSubscribers(fn func([]string)) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	id := w.n
	w.fns[id] = fn
	return func() {
		w.mu.Lock()
		delete(w.fns, id)
		w.mu.Unlock()
	}
}

func (w *watchedHung) PublishConfirm(env *messages.Envelope, done func(error)) {
	w.mu.Lock()
	r := string(env.Recipient)
	if w.topics[r] == nil {
		w.topics[r] = map[string]bool{}
	}
	w.topics[r][env.Topic] = true
	w.mu.Unlock()
	w.hungWatch.PublishConfirm(env, done)
}

// hear tells the watchers of topics; it reports how many were watching.
func (w *watchedHung) hear(topics []string) int {
	w.mu.Lock()
	var fns []func([]string)
	for _, fn := range w.fns {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn(topics)
	}
	return len(fns)
}

// topicsTo lists the topics of the envelopes published to recipient.
func (w *watchedHung) topicsTo(recipient []byte) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ts []string
	for t := range w.topics[string(recipient)] {
		ts = append(ts, t)
	}
	return ts
}

// TestOutboxTopicHeardEndsBackoff: a lane backing off on a peer that was
// unreachable offers its probe as soon as the transport reports a
// subscriber of the topic it publishes to (transport.Watcher: the peer's
// node is back), not at the end of its wait. The clock is frozen, so no
// wait ends by itself; news of an unrelated topic wakes nothing. (Before,
// the backlog waited up to MaxOutboxBackoff, 1 min, after the peer was
// back, unless the peer wrote first.)
func TestOutboxTopicHeardEndsBackoff(t *testing.T) {
	frozen := time.Now()
	w := &watchedHung{hungWatch: newHungWatch(time.Millisecond), fns: map[int]func([]string){}, topics: map[string]map[string]bool{}}
	t.Cleanup(func() { w.Close() })
	var in byRecipient
	eng, err := ratchetd.Open(ratchetd.Options{Store: persistence.NewMemory(), Transport: w, Handler: in.handle,
		Clock: func() time.Time { return frozen }, OutboxRetryInterval: 10 * time.Millisecond,
		MaxOutboxInflight: 32, MaxOutboxAhead: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	alice, _, carol := aliceBobCarol(t, eng)
	carolID := carol.Identity()
	w.setHung(carolID, true)
	const n = 20
	for i := range n {
		if _, err := alice.Send(carolID, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: carol has %d of %d", what, in.count(carolID), n)
			}
		}
	}
	wait("a send to carol failing", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.failed[string(carolID[:])]
	})
	w.setHung(carolID, false)
	if k := w.hear([]string{"some-other-topic"}); k != 1 {
		t.Fatalf("%d watchers; want the engine's one", k)
	}
	time.Sleep(200 * time.Millisecond) // twenty passes: none may probe yet
	if k := in.count(carolID); k != 0 {
		t.Fatalf("carol received %d while alice's lane to her waits on a frozen clock", k)
	}
	topics := w.topicsTo(carolID[:])
	if len(topics) == 0 {
		t.Fatal("nothing was published to carol")
	}
	w.hear(topics)
	wait("carol's backlog after her topic was heard", func() bool { return in.count(carolID) == n })
}
