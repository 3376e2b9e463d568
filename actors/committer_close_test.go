package actors

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/actors/deadline"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// Writes queued without waiting (an inbox deletion, registry activity) just
// before Engine.Close are written: Close poisons the Committer last, and the
// Committer's Flush note for them is behind the poison.
// memoryEngine is an engine on an in-memory store and transport; the
// transport is closed after the test.
func memoryEngine(t *testing.T) (*Engine, *persistence.Memory) {
	t.Helper()
	store := persistence.NewMemory()
	tr := transport.NewMemory(transport.MemoryOptions{})
	t.Cleanup(func() { tr.Close() })
	return NewEngine(Config{}, store, tr, func(Message) {}), store
}

func TestCloseWritesQueuedCommits(t *testing.T) {
	e, store := memoryEngine(t)
	const n = 50
	for i := range n {
		e.deps.commitLater([]persistence.Write{{Key: []byte(fmt.Sprintf("later-%02d", i)), Value: []byte{1}}})
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := store.Get([]byte(fmt.Sprintf("later-%02d", i))); err != nil {
			t.Fatalf("write %d queued before Close is not in the store: %v", i, err)
		}
	}
}

// Acknowledgements made before the engine closes are written. (Found by
// review: Acks went through the installations, and Close stopped them with
// a system message, which runs before the queued Acks; the redelivered
// messages came back after a restart. Acks now go to the Committer, which
// Close stops last, after what is queued to it.)
func TestCloseWritesQueuedAcks(t *testing.T) {
	e, store := memoryEngine(t)
	id, _, err := e.CreateInstallation(nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	ws := make([]persistence.Write, n)
	for i := range ws {
		ws[i] = persistence.Write{Key: persistence.InboxKey(id, []byte(fmt.Sprintf("msg-%04d", i))), Value: []byte{1}}
	}
	if err := store.Commit(ws); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := e.Ack(id, []byte(fmt.Sprintf("msg-%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	left := 0
	if err := store.Scan(persistence.InboxPrefix(id), func(_, _ []byte) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of %d acknowledged messages still in the inbox after Close", left, n)
	}
}

// An installation answers an AckMessage only when it was asked: sent
// without a reply address (as Engine.Ack did), its answer went to the dead
// letters, one per acknowledged message. A request still gets its answer.
func TestAckSendsNoDeadLetter(t *testing.T) {
	e, _ := memoryEngine(t)
	defer e.Close()
	var dead atomic.Int32
	sub := e.system.EventStream.Subscribe(func(ev any) {
		if _, ok := ev.(*actor.DeadLetterEvent); ok {
			dead.Add(1)
		}
	})
	defer e.system.EventStream.Unsubscribe(sub)
	id, _, err := e.CreateInstallation(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.get(id)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		e.system.Root.Send(h.pid, &messages.AckMessage{Id: []byte(fmt.Sprintf("msg-%02d", i))})
		if err := e.Ack(id, []byte(fmt.Sprintf("direct-%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.Request(id, &messages.AckMessage{Id: []byte("asked")}) // behind the 20
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(*messages.Ack); !ok {
		t.Fatalf("a requested AckMessage was answered with %T", res)
	}
	if n := dead.Load(); n != 0 {
		t.Fatalf("%d dead letters after 20 acknowledgements, want none", n)
	}
}

// A commit waits with a recycled channel and timer, except after a
// timeout: the Committer may still answer on that channel, and the late
// answer must not become a later commit's outcome.
func TestCommitWaitNotReusedAfterTimeout(t *testing.T) {
	e, _ := memoryEngine(t)
	defer e.Close()
	late := make(chan chan<- error, 1)
	hole := e.system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*localCommit); ok {
			late <- m.done // never answered in time
		}
	}))
	real, timeout, clock := e.deps.committer, e.deps.cfg.CommitTimeout, e.deps.commitWaits.Load()
	short := deadline.New(20 * time.Millisecond)
	defer short.Stop()
	e.deps.committer, e.deps.cfg.CommitTimeout = hole, 20*time.Millisecond
	e.deps.commitWaits.Store(short)
	if err := e.deps.commit([]persistence.Write{{Key: []byte("k"), Value: []byte{1}}}); !errors.Is(err, errStore) {
		t.Fatalf("a commit nobody answered returned %v, want a store error", err)
	}
	(<-late) <- errors.New("a late answer")
	e.deps.committer, e.deps.cfg.CommitTimeout = real, timeout
	e.deps.commitWaits.Store(clock)
	for i := range 50 {
		if err := e.deps.commit([]persistence.Write{{Key: []byte(fmt.Sprint("k", i)), Value: []byte{1}}}); err != nil {
			t.Fatalf("commit %d after the timeout: %v", i, err)
		}
	}
}

// A panic that escapes an engine actor, and one an actor recovers in
// place, are both counted in ActorFailures (exported as a metric: nothing
// a peer sends should ever raise it).
func TestActorFailuresCounted(t *testing.T) {
	e, _ := memoryEngine(t)
	defer e.Close()
	done := make(chan struct{}, 2)
	pid := e.system.Root.Spawn(e.deps.props(func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			switch ctx.Message().(type) {
			case string:
				panic("boom")
			case *actor.Restarting:
				done <- struct{}{}
			}
		})
	}))
	e.system.Root.Send(pid, "boom")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the actor was not restarted")
	}
	if n := e.Stats().ActorFailures; n != 1 {
		t.Fatalf("ActorFailures = %d after one escaped panic, want 1", n)
	}
	_ = e.deps.recovered("recovered in place", "test")
	if n := e.Stats().ActorFailures; n != 2 {
		t.Fatalf("ActorFailures = %d after a recovered panic, want 2", n)
	}
}

// MailboxDepth counts the messages queued to the engine's actors and not
// yet taken.
func TestMailboxDepth(t *testing.T) {
	e, _ := memoryEngine(t)
	defer e.Close()
	base := e.Stats().MailboxDepth
	release, taken := make(chan struct{}), make(chan struct{}, 1)
	pid := e.system.Root.Spawn(e.deps.props(func() actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(int); ok {
				select {
				case taken <- struct{}{}:
				default:
				}
				<-release
			}
		})
	}))
	for i := range 10 {
		e.system.Root.Send(pid, i)
	}
	<-taken // the first is being handled; nine wait
	if n := e.Stats().MailboxDepth - base; n != 9 {
		t.Fatalf("MailboxDepth = %d with nine messages waiting", n)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().MailboxDepth != base {
		if time.Now().After(deadline) {
			t.Fatalf("MailboxDepth = %d after the queue drained, want %d", e.Stats().MailboxDepth, base)
		}
		time.Sleep(time.Millisecond)
	}
}

// Every group commit lands in one bucket of each commit histogram.
func TestCommitHistograms(t *testing.T) {
	e, _ := memoryEngine(t)
	defer e.Close()
	before := e.Stats()
	for _, n := range []int{1, 3, 100} {
		ws := make([]persistence.Write, n)
		for i := range ws {
			ws[i] = persistence.Write{Key: []byte(fmt.Sprintf("h-%d-%d", n, i)), Value: []byte{1}}
		}
		if err := e.deps.commit(ws); err != nil {
			t.Fatal(err)
		}
	}
	st := e.Stats()
	for i, want := range map[int]int64{0: 1, 2: 1, 7: 1} { // ≤ 1, ≤ 4, ≤ 128 writes
		if got := st.CommitBatch[i] - before.CommitBatch[i]; got != want {
			t.Errorf("CommitBatch[%d] (≤ %v writes) grew by %d, want %d", i, CommitBatchBuckets[i], got, want)
		}
	}
	var lat int64
	for i := range st.CommitLatency {
		lat += st.CommitLatency[i] - before.CommitLatency[i]
	}
	if commits := st.Commits - before.Commits; commits != 3 || lat != 3 {
		t.Fatalf("%d commits, %d in the latency histogram, want 3 and 3", commits, lat)
	}
	if bucketOf(5000, CommitBatchBuckets[:]) != len(CommitBatchBuckets) {
		t.Fatal("a batch above every bound is not in the last bucket")
	}
}
