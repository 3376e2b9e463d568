package actors

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/actors/deadline"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// DefaultMaxBatchWrites bounds one group commit.
const DefaultMaxBatchWrites = 4096

// committer is the Committer actor: it drains the commit requests of many
// actors into one store transaction (group commit: one fsync per batch, not
// per message, protoactor-badger.md §6.4) and acknowledges each writer once
// the batch is durable. A batch closes when the Committer reaches its own
// Flush note, which it sends itself behind the first request of a batch, so
// every request queued meanwhile joins it. It is bounded by MaxBatchWrites
// and by the store's transaction size, and never splits one request.
type committer struct {
	deps      *deps
	pending   []pendingCommit
	scheduled bool
	// writes is the pending requests' writes; last the number of requests
	// the last group commit held (CommitDelay).
	writes, last int
	pace         commitPace
}

// commitPace is the delay a busy store's group commits wait for company,
// kept at what the cores can afford (Config.CommitDelay). Waiting costs
// nothing while other work keeps the cores busy (many conversations, each
// with work of its own: the commit's fsync is then shared by more of them);
// it idles them when the writers are few and all wait on the commit (a
// fixed 1 ms took a 32-worker x3dh bench from 1 % of the cores idle to
// 11 %, and 74 % of its ceiling to 65 %). So the delay follows the
// process's CPU use, measured over windows of commitPaceWindow: it grows
// by an eighth of CommitDelay while the process uses busyShare of its
// cores or more, and halves when it uses less than idleShare.
type commitPace struct {
	delay time.Duration
	at    time.Time     // the window's start
	cpu   time.Duration // the process's CPU time then
}

// paceCPU is the process's CPU time (tests replace it).
var paceCPU = processCPU

const (
	commitPaceWindow = 50 * time.Millisecond
	busyShare        = 0.95
	idleShare        = 0.92
)

// adjust ends a window once it is long enough: max is CommitDelay, cores
// the cores the process can use (GOMAXPROCS, or fewer CPUs: a GOMAXPROCS
// above the CPU count must not make busy cores look idle).
func (p *commitPace) adjust(now time.Time, max time.Duration, cores int) {
	if max <= 0 {
		p.delay = 0
		return
	}
	wall := now.Sub(p.at)
	if !p.at.IsZero() && wall < commitPaceWindow {
		return // no system call per commit: one per window
	}
	cpu, ok := paceCPU()
	if !ok {
		return
	}
	if p.at.IsZero() {
		p.at, p.cpu = now, cpu
		return
	}
	share := float64(cpu-p.cpu) / (float64(wall) * float64(cores))
	p.at, p.cpu = now, cpu
	switch {
	case share >= busyShare:
		p.delay = min(p.delay+max/8, max)
	case share < idleShare:
		p.delay /= 2
		if p.delay < max/16 {
			p.delay = 0
		}
	}
}

type pendingCommit struct {
	to     *actor.PID
	done   chan<- error // a localCommit's answer, instead of a CommitAck to to
	writes []persistence.Write
	size   int64
}

// localCommit is the in-process form of a CommitRequest, for the engine's
// own actors: the writes as they are, and a channel for the outcome. The
// Committer writes this process's store, so its writers are always local;
// skipping the protobuf copy and the reply future saves an allocation per
// write and a future per commit on the hot path. CommitRequest stays the
// protocol for anything else.
type localCommit struct {
	writes []persistence.Write
	done   chan<- error // nil: nobody waits
}

// answer tells a writer the outcome of its commit.
func (p pendingCommit) answer(ctx actor.Context, err error) {
	if p.done != nil {
		p.done <- err // buffered: never blocks the Committer
		return
	}
	if p.to == nil {
		return
	}
	ack := &messages.CommitAck{}
	if err != nil {
		ack = &messages.CommitAck{Error: messages.ErrorCode_STORE, Detail: err.Error()}
	}
	ctx.Send(p.to, ack)
}

func (c *committer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.CommitRequest:
		p := pendingCommit{to: ctx.Sender(), writes: make([]persistence.Write, len(m.Writes))}
		for i, w := range m.Writes {
			p.writes[i] = persistence.Write{Key: w.Key, Value: w.Value, Delete: w.Delete}
			p.size += int64(len(w.Key) + len(w.Value))
		}
		c.add(ctx, p)
	case *localCommit:
		p := pendingCommit{done: m.done, writes: m.writes}
		for _, w := range m.writes {
			p.size += int64(len(w.Key) + len(w.Value))
		}
		c.add(ctx, p)
	case *messages.Flush:
		c.scheduled = false
		c.flush(ctx)
	case *actor.Stopping:
		// Engine.Close poisons the Committer last, but the Flush note of
		// the requests queued just before the poison (writes nobody waits
		// for: an inbox deletion after an Ack, registry activity) is behind
		// it and would never run: they are written now.
		c.flush(ctx)
	}
}

// add queues a request; the first of a batch sends the Flush note, at
// once or, when the last group commit was large, CommitDelay later. A
// batch that holds MaxBatchWrites is written without waiting.
func (c *committer) add(ctx actor.Context, p pendingCommit) {
	c.pending = append(c.pending, p)
	c.writes += len(p.writes)
	if c.scheduled {
		if max := c.deps.cfg.MaxBatchWrites; c.writes >= max && c.writes-len(p.writes) < max {
			ctx.Send(ctx.Self(), &messages.Flush{}) // once, as it fills
		}
		return
	}
	c.scheduled = true
	if d := c.pace.delay; d > 0 && c.last >= c.deps.cfg.CommitDelayMinBatch && c.writes < c.deps.cfg.MaxBatchWrites {
		root, self := ctx.ActorSystem().Root, ctx.Self()
		time.AfterFunc(d, func() { root.Send(self, &messages.Flush{}) })
		return
	}
	ctx.Send(ctx.Self(), &messages.Flush{})
}

func (c *committer) fits(n int, size int64) bool {
	if n > c.deps.cfg.MaxBatchWrites {
		return false
	}
	if b, ok := c.deps.store.(persistence.Batcher); ok {
		return b.Fits(n, size)
	}
	return true
}

func (c *committer) flush(ctx actor.Context) {
	for len(c.pending) > 0 {
		n, writes, size := 0, 0, int64(0)
		for n < len(c.pending) {
			p := c.pending[n]
			if n > 0 && !c.fits(writes+len(p.writes), size+p.size) {
				break
			}
			writes += len(p.writes)
			size += p.size
			n++
		}
		batch := c.pending[:n]
		c.last = n
		c.pace.adjust(time.Now(), c.deps.cfg.CommitDelay, min(runtime.GOMAXPROCS(0), runtime.NumCPU()))
		all := make([]persistence.Write, 0, writes)
		for _, p := range batch {
			all = append(all, p.writes...)
		}
		start := time.Now()
		err := c.commit(all)
		if err != nil && n > 1 {
			// A batch the store refused (too big after all, or one bad
			// write) must not fail the writers that would commit alone:
			// each request is committed, or refused, on its own.
			c.deps.log.Warn("group commit refused; committing one by one", "requests", n, "err", err)
			for _, p := range batch {
				p.answer(ctx, c.commit(p.writes))
			}
			clear(c.pending[:n])
			c.pending = c.pending[n:]
			continue
		}
		s := c.deps.stats
		took := time.Since(start)
		s.commits.Add(1)
		s.committedWrites.Add(int64(len(all)))
		s.commitNanos.Add(int64(took))
		s.commitBatch[bucketOf(float64(len(all)), CommitBatchBuckets[:])].Add(1)
		s.commitLatency[bucketOf(took.Seconds(), CommitLatencyBuckets[:])].Add(1)
		for {
			max := s.maxBatch.Load()
			if int64(n) <= max || s.maxBatch.CompareAndSwap(max, int64(n)) {
				break
			}
		}
		if err != nil {
			c.deps.log.Error("commit failed", "writes", len(all), "err", err)
		}
		for _, p := range batch {
			p.answer(ctx, err)
		}
		clear(c.pending[:n])
		c.pending = c.pending[n:]
	}
	c.pending, c.writes = nil, 0
}

// commit calls the store; a store that panics fails the batch, and its
// writers are told, instead of waiting for acknowledgements a restarted
// Committer would never send.
func (c *committer) commit(ws []persistence.Write) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.deps.stats.actorFailures.Add(1)
			err = fmt.Errorf("%w: store panicked: %v", errStore, r)
		}
	}()
	return c.deps.store.Commit(ws)
}

// commitRequest converts writes to the actor message.
func commitRequest(ws []persistence.Write) *messages.CommitRequest {
	r := &messages.CommitRequest{Writes: make([]*messages.StoreWrite, len(ws))}
	for i, w := range ws {
		r.Writes[i] = &messages.StoreWrite{Key: w.Key, Value: w.Value, Delete: w.Delete}
	}
	return r
}

// commit makes writes durable through the Committer and waits for it. It
// blocks the calling actor, which is what a PeerSession wants: it must not
// answer (release a ciphertext or a plaintext) before its state is durable,
// and blocking one session's mailbox leaves every other session running.
func (d *deps) commit(ws []persistence.Write) error {
	done := getCommitDone()
	d.root.Send(d.committer, &localCommit{writes: ws, done: done})
	err, late := deadline.Recv(d.commitClock(), done, nil)
	if late != nil {
		// Not reused: the Committer may still answer on done.
		return &lateCommitError{late: done, after: d.cfg.CommitTimeout}
	}
	commitDones.Put(done) // answered: nothing more comes on it
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errStore):
		return err
	}
	return fmt.Errorf("%w: %w", errStore, err)
}

// lateCommitError: a commit that did not answer within CommitTimeout. The
// Committer may still apply it; late receives its outcome. A writer must
// not write its keys again before that (a later write applied first would
// be overwritten by this one, an older state).
type lateCommitError struct {
	late  <-chan error
	after time.Duration
}

func (e *lateCommitError) Error() string {
	return fmt.Sprintf("%v: no answer from the Committer in %v", errStore, e.after)
}

func (e *lateCommitError) Unwrap() error { return errStore }

// lateCommits are the commits that answered late (lateCommitError), by the
// store key of the session that made them, until their outcome has come. A
// session that stops before it came (awaitLate gave up: a store wedged for
// two CommitTimeouts) leaves it here, and its successor under the same key
// (after a passivation, or its supervisor's or installation's stop) writes
// nothing and answers STORE until it has come; the installation's staleNow
// does not write that key meanwhile. In memory only: a late commit cannot
// land once its process has ended.
type lateCommits struct {
	mu      sync.Mutex
	m       map[string]*lateCommit
	sweepAt int // add sweeps once the registry has grown to this size
}

// lateCommit is one commit that answered late. Whoever sees its outcome
// first (landed, wait) closes done, so that every other reader sees it too.
type lateCommit struct {
	late <-chan error
	keys [][]byte
	done chan struct{}
	once sync.Once
}

func (c *lateCommit) close() { c.once.Do(func() { close(c.done) }) }

// landed reports whether the commit's outcome has come (applied or
// refused: the store tells which).
func (c *lateCommit) landed() bool {
	select {
	case <-c.done:
		return true
	case <-c.late:
		c.close()
		return true
	default:
		return false
	}
}

// wait waits up to d for the outcome, and reports whether it came.
func (c *lateCommit) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return true
	case <-c.late:
		c.close()
		return true
	case <-t.C:
		return false
	}
}

// add registers a late commit of the given session keys, whose outcome
// comes on late. It drops the entries whose outcome has come meanwhile
// (one nobody asked about again would stay otherwise), each time the
// registry has doubled since the last sweep: a store stall can make many
// sessions' commits late at once, and a sweep per add would cost O(n²).
func (l *lateCommits) add(late <-chan error, keys ...[]byte) *lateCommit {
	c := &lateCommit{late: late, keys: keys, done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*lateCommit{}
	}
	if len(l.m) >= l.sweepAt {
		for k, old := range l.m {
			if old.landed() {
				delete(l.m, k)
			}
		}
		l.sweepAt = 2 * len(l.m)
	}
	for _, k := range keys {
		l.m[string(k)] = c
	}
	return c
}

// pending returns key's late commit if its outcome has not come yet, nil
// otherwise.
func (l *lateCommits) pending(key []byte) *lateCommit {
	l.mu.Lock()
	c := l.m[string(key)]
	l.mu.Unlock()
	if c == nil || !c.landed() {
		return c
	}
	l.forget(c)
	return nil
}

// forget drops a commit whose outcome has come.
func (l *lateCommits) forget(c *lateCommit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range c.keys {
		if l.m[string(k)] == c {
			delete(l.m, string(k))
		}
	}
}

// commitClock is what times out commit waits.
func (d *deps) commitClock() *deadline.Clock {
	if c := d.commitWaits.Load(); c != nil {
		return c
	}
	c := deadline.New(d.cfg.CommitTimeout)
	if !d.commitWaits.CompareAndSwap(nil, c) {
		c.Stop()
		return d.commitWaits.Load()
	}
	return c
}

// commitDones are the channels commits are answered on, recycled (two
// commits per message on the hot path) unless the wait timed out, when the
// Committer may still answer.
var commitDones sync.Pool

func getCommitDone() chan error {
	if c, ok := commitDones.Get().(chan error); ok {
		return c
	}
	return make(chan error, 1)
}

// commitLater queues writes without waiting (registry activity, inbox
// deletions: losing them in a crash only repeats work).
func (d *deps) commitLater(ws []persistence.Write) {
	d.root.Send(d.committer, &localCommit{writes: ws})
}
