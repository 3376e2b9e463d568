package actors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// The outbox: every accepted send is a durable record until the transport
// took it (a transport that does not confirm: Publish returned) or
// confirmed it (the networked one: the receiving node committed it).
//
// Order matters to the receiver. A message that later ones overtook is
// decrypted with a skipped key, and a receiver keeps few of them (at most
// MaxSkip skipped at once, MaxMessageKeysPerSession held, none older than
// its last MaxKeep messages: status-compat.md §6.5). A send refused once
// and offered again after thousands of later ones is undecryptable: the
// receiver takes it for a duplicate, confirms it, and it is lost. So:
//   - with a confirming transport, each recipient identity is a lane whose
//     sends are published oldest first, at most MaxOutboxAhead past its
//     oldest unconfirmed one (a sliding window, anchored where a refused
//     send waits for its retry); lanes do not wait for each other, so a
//     peer that is down holds up only its own sends. Once a send of a lane
//     failed, the lane probes: one send at a time (its oldest) until one is
//     confirmed, so a peer that is down or hung holds one MaxOutboxInflight
//     slot, not its whole window, retry after retry;
//   - with any other transport, once Publish refused a send, later sends
//     wait in the outbox behind it and go out in order.

// outboxItem is an outbox envelope waiting to be published.
type outboxItem struct {
	id     []byte
	env    *messages.Envelope
	lane   *lane
	resent bool // read back from the store (a retry), not just accepted
}

// lane is the outbox's state for one recipient identity.
type lane struct {
	name string
	// window holds the lane's published sends from its oldest unconfirmed
	// one on, in publication order: window[head:] is what the receiver may
	// have seen ahead of that one, never more than MaxOutboxAhead.
	window []*slot
	head   int
	// queuedNew counts the lane's sends in waiting that are not in the
	// window yet: they hold their place in it.
	queuedNew int
	// read is the key of the lane's last record taken into memory (the
	// window or waiting): every record of the lane up to it is known.
	read []byte
	// stored: the store may hold records of the lane after read that are
	// not in memory; later ones wait behind them.
	stored bool
	// failing: a send of the lane failed and none was confirmed since. The
	// lane then has one send at most waiting or in flight, probe (its
	// oldest unconfirmed one, or its oldest record with an empty window);
	// its other sends stay where they are until a confirmation ends it.
	failing bool
	probe   string
	// fails counts the failed probes since the last confirmation (the
	// first failure included); the next probe waits until probeAt. seen:
	// the peer sent us something while a probe was out, so that probe's
	// failure does not make the next one wait.
	fails   int
	probeAt time.Time
	seen    bool
	// watched: the topics of its failed sends, while failing: news of a
	// subscriber on one of them (transport.Watcher) ends its wait.
	watched []string
}

// peerSeen: identity signed an envelope that just arrived, so it is
// online: its lane, if it is backing off, offers its probe at the next
// pass instead of at the end of its wait, and a probe already out that
// fails does not make the next one wait. Our own identity's envelopes
// (our other devices, our own echoes) say nothing of that lane's
// receivers.
func (in *installation) peerSeen(ctx actor.Context, identity keys.PublicKey) {
	l := in.lanes[string(identity[:])]
	if l == nil || !l.failing || identity == in.identity.Public {
		return
	}
	if l.wake(in.deps.cfg.Clock(), in.deps.cfg.MaxOutboxBackoff) {
		in.passSoon(ctx)
	}
}

// topicsHeard: the transport saw subscribers of these topics appear (a
// peer node back after it was silent, or a topic announced anew): the
// failing lanes that published to them are woken as by peerSeen.
func (in *installation) topicsHeard(ctx actor.Context, m *messages.TopicsHeard) {
	now, pass := in.deps.cfg.Clock(), false
	for _, t := range m.Topics {
		for l := range in.watching[t] {
			if l.failing && l.wake(now, in.deps.cfg.MaxOutboxBackoff) {
				pass = true
			}
		}
	}
	if pass {
		in.passSoon(ctx) // one pass for every lane woken
	}
}

// wake ends a failing lane's wait: its probe may go at once (the caller
// runs passSoon when wake reports so), and a probe already out that fails
// does not make the next one wait.
func (l *lane) wake(now time.Time, max time.Duration) bool {
	if l.due(now, max) {
		l.seen = true // its probe is out, or about to be
		return false
	}
	l.probeAt = time.Time{}
	return true
}

// due reports whether a failing lane may offer its probe at now. A wait
// longer than max is over: the clock went back since it was set.
func (l *lane) due(now time.Time, max time.Duration) bool {
	return !now.Before(l.probeAt) || l.probeAt.Sub(now) > max
}

// flatProbes: the first probes of a failing lane follow each other at
// OutboxRetryInterval (10 s of them by default: a node restarting, topic
// announcements still spreading); after them each wait doubles.
const flatProbes = 5

// failed records a failed send of l: the first failure, or a failed probe,
// sets the wait before the next probe: OutboxRetryInterval for the first
// flatProbes, then doubling, up to MaxOutboxBackoff.
func (in *installation) failed(l *lane, probe bool, now time.Time) {
	if l.failing && !probe {
		return // the rest of a window published before the first failure
	}
	l.failing = true
	if probe && l.seen {
		// The peer wrote to us while this probe was out: try again at
		// the next pass.
		l.seen, l.probeAt = false, time.Time{}
		return
	}
	l.fails++
	wait := in.deps.cfg.OutboxRetryInterval << min(max(l.fails-flatProbes, 0), 20)
	l.probeAt = now.Add(min(wait, in.deps.cfg.MaxOutboxBackoff))
}

// watchLane registers a failing lane's topic with the engine's topicWatch
// (once per topic of the installation, however many lanes are in it).
func (in *installation) watchLane(ctx actor.Context, l *lane, topic string) {
	if topic == "" || slices.Contains(l.watched, topic) {
		return
	}
	l.watched = append(l.watched, topic)
	ls := in.watching[topic]
	if ls == nil {
		ls = map[*lane]bool{}
		in.watching[topic] = ls
		in.deps.watch.add(topic, in.id, later(ctx))
	}
	ls[l] = true
}

// unwatchLane takes a lane out of its topics: it recovered, or is
// forgotten.
func (in *installation) unwatchLane(l *lane) {
	for _, t := range l.watched {
		if ls := in.watching[t]; ls != nil {
			if delete(ls, l); len(ls) == 0 {
				delete(in.watching, t)
				in.deps.watch.remove(t, in.id)
			}
		}
	}
	l.watched = nil
}

// unwatchAll removes every topic of the installation from the topicWatch
// (it stops, or restarts and forgets its lanes).
func (in *installation) unwatchAll() {
	for t := range in.watching {
		in.deps.watch.remove(t, in.id)
	}
	in.watching = nil
}

// slot is one published send of a lane.
type slot struct {
	id        string
	lane      *lane
	confirmed bool
	inflight  bool
	topic     string // its envelope's (watchLane)
}

func (l *lane) size() int { return len(l.window) - l.head }

// room is how many more sends the lane may take into memory.
func (l *lane) room(ahead int) int { return ahead - l.size() - l.queuedNew }

// advance drops confirmed sends from the front of the window.
func (in *installation) advance(l *lane) {
	for l.head < len(l.window) && l.window[l.head].confirmed {
		delete(in.windowed, l.window[l.head].id)
		l.window[l.head] = nil
		l.head++
	}
	if l.head == len(l.window) {
		l.window, l.head = l.window[:0], 0
		// Nothing left to retry (what failed expired): the lane's next
		// record, once read, is its probe.
	} else if l.head > 64 && l.head*2 > len(l.window) {
		n := copy(l.window, l.window[l.head:])
		clear(l.window[n:])
		l.window, l.head = l.window[:n], 0
	}
	in.forgetIdle(l)
}

// forgetIdle drops a lane with nothing in memory and nothing stored. (A
// confirmed record whose deletion is not committed yet may then be read
// by a pass and published again: the receiver drops the duplicate.)
func (in *installation) forgetIdle(l *lane) {
	if l.size() == 0 && l.queuedNew == 0 && !l.stored && in.lanes[l.name] == l {
		in.unwatchLane(l)
		delete(in.lanes, l.name)
	}
}

// laneOf is the lane of an envelope: its recipient identity. Public
// envelopes (no ratchet) and transports that do not confirm have none.
func (in *installation) laneOf(env *messages.Envelope) *lane {
	if len(env.Recipient) == 0 {
		return nil
	}
	if _, ok := in.deps.tr.(transport.Confirmer); !ok {
		return nil
	}
	if l := in.lanes[string(env.Recipient)]; l != nil {
		return l
	}
	l := &lane{name: string(env.Recipient)}
	in.lanes[l.name] = l
	return l
}

// outboxWrites are the outbox records of envelopes.
func (in *installation) outboxWrites(envs []*messages.Envelope) ([]persistence.Write, [][]byte, error) {
	now := in.deps.cfg.Clock().UnixNano()
	writes := make([]persistence.Write, 0, len(envs))
	ids := make([][]byte, 0, len(envs))
	for _, env := range envs {
		rec := &messages.OutboxRecord{Id: in.outboxID(env), Envelope: env, CreatedUnixNano: now}
		v, err := proto.Marshal(rec)
		if err != nil {
			return nil, nil, err
		}
		writes = append(writes, persistence.Write{Key: persistence.OutboxKey(in.id, rec.Id), Value: v})
		ids = append(ids, rec.Id)
	}
	return writes, ids, nil
}

// publishKept commits envelopes to the outbox, then publishes them from it,
// on a transport that confirms delivery (the networked one): each record
// stays until the transport confirms it, and is offered again while it is
// not, after a restart too. done gets how many wait their turn (not handed to
// the transport yet), or why the records were not committed (errStore: they
// may still land, and a pass publishes them then).
func (in *installation) publishKept(ctx actor.Context, envs []*messages.Envelope, done func(queued int, err error)) {
	writes, ids, err := in.outboxWrites(envs)
	if err != nil {
		done(0, err)
		return
	}
	for _, id := range ids {
		in.committing[string(id)] = true
	}
	f := ctx.RequestFuture(in.deps.committer, commitRequest(writes), in.deps.cfg.RequestTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		for _, id := range ids {
			delete(in.committing, string(id))
		}
		if ack, _ := res.(*messages.CommitAck); err != nil || ack == nil || ack.Error != messages.ErrorCode_OK {
			// It may still land (a timeout): a pass reads it then.
			in.lateCommit(ctx, envs)
			done(0, fmt.Errorf("%w: outbox commit failed", errStore))
			return
		}
		c := in.deps.tr.(transport.Confirmer)
		queued := 0
		for i, env := range envs {
			if !in.publishOutbox(ctx, c, ids[i], env) {
				queued++
			}
		}
		done(queued, nil)
	})
}

// outboxIDSize: a record id is an 8-byte big-endian sequence number (the
// clock in nanoseconds, or one more than the last, so it never goes back)
// and the first 16 bytes of the envelope's signature. Records are scanned,
// and so published again, in the order they were made.
const outboxIDSize = 8 + 16

// outboxID names the outbox record of an envelope.
func (in *installation) outboxID(env *messages.Envelope) []byte {
	seq := max(in.outboxSeq+1, uint64(max(in.deps.cfg.Clock().UnixNano(), 0)))
	in.outboxSeq = seq
	id := binary.BigEndian.AppendUint64(make([]byte, 0, outboxIDSize), seq)
	return append(id, env.Signature[:16]...)
}

// publishOutbox publishes one outbox envelope just accepted (its record is
// durable) on a transport that confirms delivery (the networked one): the
// record stays until the confirmation arrives, and is published again
// while it does not. Behind older envelopes of its lane, beyond its lane's
// window or with MaxOutboxInflight in flight, it waits its turn: in memory
// up to a few windows, beyond that in the store. It reports whether the
// envelope was handed to the transport now.
func (in *installation) publishOutbox(ctx actor.Context, c transport.Confirmer, id []byte, env *messages.Envelope) (now bool) {
	if sid := string(id); in.inflight[sid] || in.queued[sid] || in.windowed[sid] != nil {
		return in.inflight[sid] // taken already (passes leave records being committed alone)
	}
	max := in.deps.cfg.MaxOutboxInflight
	l := in.laneOf(env)
	key := persistence.OutboxKey(in.id, id)
	open := !in.backlog && (l == nil || (!l.stored && !l.failing && l.room(in.deps.cfg.MaxOutboxAhead) > 0))
	// Sends commit concurrently: a later record of the lane may have been
	// taken before this one was committed. No pass would read it (a
	// lane's records up to read are known), so it is taken now.
	late := l != nil && l.read != nil && bytes.Compare(key, l.read) < 0
	switch {
	case (open || late) && len(in.waiting) == 0 && len(in.inflight) < max:
		in.take(l, key)
		in.confirm(ctx, c, outboxItem{id: id, env: env, lane: l})
		return true
	case (open && len(in.waiting) < 4*max) || late:
		in.take(l, key)
		in.queue(outboxItem{id: id, env: env, lane: l})
	case l != nil && !in.backlog && len(in.waiting) < 4*max:
		// Its lane is full, failing, or waits for stored records: it is
		// read when the lane has room again (outboxResult), or by a timed
		// pass.
		l.stored = true
		in.scheduleRetry(ctx)
	default:
		// Left in the store, after every record a pass has read: a pass
		// that goes on after cursor reads it, a timed pass in any case.
		in.backlog = true
		in.scheduleRetry(ctx)
	}
	return false
}

// lateCommit handles outbox records whose commit did not answer: they may
// land later, below what their lanes have read, where passes take them
// for confirmed ones. Their lanes forget what they read (a pass may then
// publish a confirmed record again: the receiver drops the duplicate), and
// timed passes read the whole outbox for a CommitTimeout: a record that
// lands after a pass cleared its lane's stored mark is under no mark.
func (in *installation) lateCommit(ctx actor.Context, envs []*messages.Envelope) {
	for _, env := range envs {
		if l := in.laneOf(env); l != nil {
			l.read, l.stored = nil, true
		}
	}
	in.lateUntil = in.deps.cfg.Clock().Add(in.deps.cfg.CommitTimeout)
	in.scheduleRetry(ctx)
}

// take records that a new record of l (at key) is taken into memory.
func (in *installation) take(l *lane, key []byte) {
	if l == nil {
		return
	}
	l.queuedNew++
	if l.read == nil || bytes.Compare(key, l.read) > 0 {
		l.read = key
	}
}

func (in *installation) queue(it outboxItem) {
	in.queued[string(it.id)] = true
	in.waiting = append(in.waiting, it)
}

// confirm publishes an outbox envelope and arranges for its confirmation.
func (in *installation) confirm(ctx actor.Context, c transport.Confirmer, it outboxItem) {
	id, env := it.id, it.env
	if in.inflight[string(id)] {
		return
	}
	if l := it.lane; l != nil {
		if s := in.windowed[string(id)]; s != nil {
			s.inflight = true // a retry, in its place in the window
		} else {
			l.queuedNew--
			s := &slot{id: string(id), lane: l, inflight: true, topic: env.Topic}
			l.window = append(l.window, s)
			in.windowed[s.id] = s
		}
	}
	in.deps.stats.published.Add(1)
	if it.resent {
		in.deps.stats.outboxResent.Add(1)
	}
	in.inflight[string(id)] = true
	root, self := ctx.ActorSystem().Root, later(ctx)
	log := in.deps.log
	c.PublishConfirm(env, func(err error) {
		r := &messages.OutboxResult{Id: id}
		if errors.Is(err, transport.ErrBadEnvelope) {
			// Refused before it was sent, and it would be again: dropped,
			// so that it does not hold its lane up.
			log.Warn("outbox envelope refused by the transport; dropped", "err", err)
			err = nil
		}
		if err != nil {
			r.Error = err.Error()
		}
		root.Send(self, r)
	})
}

// pump publishes waiting envelopes while MaxOutboxInflight allows (each
// already holds its place in its lane's window); once none waits and the
// store holds more, the pass goes on after its cursor.
func (in *installation) pump(ctx actor.Context) {
	c, ok := in.deps.tr.(transport.Confirmer)
	if !ok {
		return
	}
	max := in.deps.cfg.MaxOutboxInflight
	for len(in.waiting) > 0 && len(in.inflight) < max {
		it := in.waiting[0]
		in.waiting[0] = outboxItem{}
		in.waiting = in.waiting[1:]
		delete(in.queued, string(it.id))
		in.confirm(ctx, c, it)
	}
	if len(in.waiting) == 0 {
		in.waiting = nil
		if in.backlog && len(in.inflight) <= max/2 {
			in.readOutbox(ctx, false)
		}
	}
}

// outboxResult handles a transport's confirmation: a confirmed record is
// deleted and its lane's window moves on; a failed one keeps its place in
// the window, which cannot move past it, makes its lane probe, and waits
// for the next timed pass. A lane with records left in the store reads
// them once half its window is free. A confirmation ends a lane's
// probing: a pass offers what the lane holds back at once (at most one
// such pass per OutboxRetryInterval; otherwise the timed one).
func (in *installation) outboxResult(ctx actor.Context, r *messages.OutboxResult) {
	delete(in.inflight, string(r.Id))
	s := in.windowed[string(r.Id)]
	var l *lane
	probe := false
	if s != nil {
		s.inflight, l = false, s.lane
		if l.probe == s.id {
			l.probe, probe = "", true
		}
	}
	recovered := false
	if r.Error == "" {
		in.deps.commitLater([]persistence.Write{{Key: persistence.OutboxKey(in.id, r.Id), Delete: true}})
		if s != nil {
			recovered, l.failing, l.fails, l.seen = l.failing, false, 0, false
			in.unwatchLane(l)
			s.confirmed = true
			in.advance(l)
		}
	} else {
		in.deps.log.Debug("outbox envelope not confirmed; will retry", "installation", in.id, "err", r.Error)
		if l != nil {
			in.failed(l, probe, in.deps.cfg.Clock())
			in.watchLane(ctx, l, s.topic)
		} else {
			in.strayFailed = true // a pass over the whole outbox offers it again
		}
		in.scheduleRetry(ctx)
	}
	if recovered && in.passSoon(ctx) {
		return // it pumps
	}
	if l != nil && l.stored && !l.failing && in.lanes[l.name] == l && l.room(in.deps.cfg.MaxOutboxAhead) >= in.deps.cfg.MaxOutboxAhead/2 {
		if in.scanLanes(l.read, l) {
			in.scheduleRetry(ctx)
		}
	}
	in.pump(ctx)
}

// passSoon runs an outbox pass now (it pumps), at most one such pass per
// OutboxRetryInterval, and otherwise leaves it to the timed one. It reports
// whether it ran one.
func (in *installation) passSoon(ctx actor.Context) bool {
	now := in.deps.cfg.Clock()
	if !in.eagerAt.IsZero() && !now.Before(in.eagerAt) && now.Sub(in.eagerAt) < in.deps.cfg.OutboxRetryInterval {
		in.scheduleRetry(ctx)
		return false
	}
	in.eagerAt = now
	in.readOutbox(ctx, true)
	return true
}

// scheduleRetry arranges one timed outbox pass after OutboxRetryInterval.
func (in *installation) scheduleRetry(ctx actor.Context) {
	if in.retrying {
		return
	}
	in.retrying = true
	root, self := ctx.ActorSystem().Root, later(ctx)
	time.AfterFunc(in.deps.cfg.OutboxRetryInterval, func() { root.Send(self, &messages.RetryOutbox{}) })
}

// errScanFull ends an outbox scan that read as many records as may wait.
var errScanFull = errors.New("outbox scan: enough records read")

// readOutbox runs a pass: from the oldest record (fromStart: after a
// restart, or a timed pass) or after the cursor (a pass going on).
func (in *installation) readOutbox(ctx actor.Context, fromStart bool) {
	if _, ok := in.deps.tr.(transport.Confirmer); !ok {
		in.resend(ctx)
		return
	}
	from, late := in.cursor, false
	if fromStart {
		from = nil
		// At least one pass in sweepPasses reads the whole outbox even so,
		// in case a record was left where no mark (a lane's stored, the
		// backlog) says so. After a commit that did not answer, every pass
		// does, until it must have landed or failed (lateCommit).
		now := in.deps.cfg.Clock()
		late = now.Before(in.lateUntil)
		if !late && now.Sub(in.sweptAt) < sweepPasses*in.deps.cfg.OutboxRetryInterval && in.probeOnly() {
			in.probeLanes(ctx)
			in.pump(ctx)
			return
		}
		in.sweptAt = now
	}
	if in.scanLanes(from, nil) || late {
		in.scheduleRetry(ctx)
	}
	in.pump(ctx)
}

// sweepPasses: a timed pass reads the whole outbox at least once in this
// many OutboxRetryIntervals (5 min by default).
const sweepPasses = 150

// probeOnly reports whether a pass from the start has nothing to offer but
// the probes of failing lanes, which are read by their keys: no lane that
// is not failing has a failed send or records in the store, no failing
// lane needs a stored record for its probe, and nothing else is left in
// the store (backlog, strayFailed). A peer that is down with a backlog of
// any size then costs a read per retry pass, not a scan of the outbox.
func (in *installation) probeOnly() bool {
	if in.backlog || in.strayFailed {
		return false
	}
	for _, l := range in.lanes {
		if l.failing {
			if l.size() == 0 {
				return false // its probe is a stored record
			}
			continue
		}
		if l.stored {
			return false
		}
		for _, s := range l.window[l.head:] {
			if !s.confirmed && !s.inflight && !in.queued[s.id] {
				return false // a failed send to offer again
			}
		}
	}
	return true
}

// probeLanes queues the probe of each failing lane that has none out and
// whose wait is over: its oldest unconfirmed send, read by its key. One
// that expired, or is gone, leaves the window, and the next one is the
// probe.
func (in *installation) probeLanes(ctx actor.Context) {
	now := in.deps.cfg.Clock()
	for _, l := range in.lanes {
		if l.failing && !l.due(now, in.deps.cfg.MaxOutboxBackoff) {
			in.scheduleRetry(ctx) // backing off: a later pass offers it
			continue
		}
		for l.failing && l.probe == "" && l.size() > 0 {
			s := l.window[l.head]
			if s.inflight || in.queued[s.id] {
				break // out already: its result brings the next pass
			}
			key := persistence.OutboxKey(in.id, []byte(s.id))
			v, err := in.deps.store.Get(key)
			var rec *messages.OutboxRecord
			switch {
			case err == nil:
				rec = in.readRecord(key, v)
			case !errors.Is(err, persistence.ErrNotFound):
				in.deps.log.Warn("outbox read failed", "err", err)
				in.scheduleRetry(ctx)
				return
			}
			if rec == nil {
				s.confirmed = true
				in.advance(l)
				continue
			}
			l.probe = s.id
			in.queue(outboxItem{id: rec.Id, env: rec.Envelope, lane: l, resent: true})
		}
		if l.failing && l.size() == 0 {
			in.scheduleRetry(ctx) // its probe is a stored record: a scan finds it
		}
	}
}

// resend publishes the outbox of a transport that does not confirm, oldest
// record first, until Publish refuses one (a timed pass tries again) or
// none is left; meanwhile new sends join the outbox (unsent). A backlog of
// any size costs bounded memory: it is read a few windows at a time.
func (in *installation) resend(ctx actor.Context) {
	var from []byte
	for {
		items, last, more, err := in.readRecords(from, 4*in.deps.cfg.MaxOutboxInflight)
		for _, it := range items {
			in.deps.stats.published.Add(1)
			switch err := in.deps.tr.Publish(it.env); {
			case errors.Is(err, transport.ErrBadEnvelope):
				// Refused for good: kept, it would hold up every later send.
				in.deps.log.Warn("outbox envelope refused by the transport; dropped", "installation", in.id, "err", err)
			case err != nil:
				in.scheduleRetry(ctx)
				return
			}
			in.deps.stats.outboxResent.Add(1)
			in.deps.commitLater([]persistence.Write{{Key: persistence.OutboxKey(in.id, it.id), Delete: true}})
		}
		if err != nil {
			// Not read to the end: new sends still queue behind what is
			// left, and a timed pass tries again.
			in.deps.log.Warn("outbox scan failed", "err", err)
			in.scheduleRetry(ctx)
			return
		}
		if !more {
			in.unsent, in.backlog, in.cursor = false, false, nil
			return
		}
		from = last
	}
}

// readRecords reads up to limit outbox records after from (nil: from the
// oldest), dropping those older than OutboxRetention; more reports that
// the store holds records after last; err, that the scan failed.
func (in *installation) readRecords(from []byte, limit int) (items []outboxItem, last []byte, more bool, err error) {
	prefix := persistence.OutboxPrefix(in.id)
	err = in.deps.store.Scan(prefix, func(k, v []byte) error {
		if from != nil && bytes.Compare(k, from) <= 0 {
			return nil
		}
		if len(items) == limit {
			more = true
			return errScanFull
		}
		last = append(last[:0], k...)
		if rec := in.readRecord(k, v); rec != nil {
			items = append(items, outboxItem{id: rec.Id, env: rec.Envelope, resent: true})
		}
		return nil
	})
	if errors.Is(err, errScanFull) {
		err = nil
	}
	return items, last, more, err
}

// readRecord decodes an outbox record; nil if it is unreadable (counted as
// corrupt) or expired (deleted).
func (in *installation) readRecord(k, v []byte) *messages.OutboxRecord {
	var rec messages.OutboxRecord
	if err := proto.Unmarshal(v, &rec); err != nil || rec.Envelope == nil {
		in.deps.log.Warn("outbox record unreadable; skipped", "key", fmt.Sprintf("%x", k), "err", err)
		in.deps.stats.corrupt.Add(1)
		return nil
	}
	if in.deps.cfg.Clock().Sub(time.Unix(0, rec.CreatedUnixNano)) > in.deps.cfg.OutboxRetention {
		in.deps.log.Warn("outbox envelope expired undelivered", "installation", in.id, "topic", rec.Envelope.Topic)
		in.deps.commitLater([]persistence.Write{{Key: bytes.Clone(k), Delete: true}})
		return nil
	}
	return &rec
}

// scanLanes reads the records after from (nil: from the oldest) that are
// not in memory into waiting, oldest first, at most 4×MaxOutboxInflight
// waiting in all: a failed send of a lane's window (its retry), and a new
// record of a lane while the lane has room and nothing older of it is
// left in the store. Other records stay in the store (their lane is
// marked stored). want: a lane that has room again; the scan ends once it
// is full. A backlog of any size costs bounded memory. It reports whether
// it left records of a lane in the store (a timed pass reads them if
// nothing else does first).
func (in *installation) scanLanes(from []byte, want *lane) (left bool) {
	ahead, limit := in.deps.cfg.MaxOutboxAhead, 4*in.deps.cfg.MaxOutboxInflight
	prefix := persistence.OutboxPrefix(in.id)
	skipped := map[*lane]bool{}
	heldBack := false // a failed send held back behind its failing lane's probe
	now := in.deps.cfg.Clock()
	var last []byte
	err := in.deps.store.Scan(prefix, func(k, v []byte) error {
		if from != nil && bytes.Compare(k, from) <= 0 {
			return nil
		}
		id, ok := persistence.OutboxIDOf(prefix, k)
		if ok && (in.inflight[string(id)] || in.queued[string(id)] || in.committing[string(id)]) {
			return nil
		}
		if len(in.waiting) >= limit || (want != nil && want.room(ahead) <= 0) {
			return errScanFull
		}
		last = append(last[:0], k...)
		rec := in.readRecord(k, v)
		s := in.windowed[string(id)]
		if rec == nil {
			if s != nil && !s.confirmed {
				s.confirmed = true // expired: it leaves the window
				in.advance(s.lane)
			}
			return nil
		}
		if s != nil {
			if l := s.lane; !s.confirmed && l.failing {
				// A failing lane retries its oldest send alone, once its
				// wait is over.
				if l.probe != "" || l.window[l.head] != s || !l.due(now, in.deps.cfg.MaxOutboxBackoff) {
					heldBack = true
					return nil
				}
				l.probe = s.id
			}
			if !s.confirmed {
				in.queue(outboxItem{id: rec.Id, env: rec.Envelope, lane: s.lane, resent: true})
			}
			return nil
		}
		l := in.laneOf(rec.Envelope)
		if l != nil {
			if l.read != nil && bytes.Compare(k, l.read) <= 0 {
				return nil // confirmed; its deletion is not committed yet
			}
			// Older records of the lane that this scan does not cover
			// (before from) or left in the store: this one waits too. A
			// failing lane takes a new one only as its probe, when it has
			// nothing published left to retry.
			behind := l.stored && from != nil && (l.read == nil || bytes.Compare(from, l.read) > 0)
			probe := l.failing && l.probe == "" && l.size() == 0 && l.queuedNew == 0 && l.due(now, in.deps.cfg.MaxOutboxBackoff)
			if skipped[l] || behind || l.room(ahead) <= 0 || (l.failing && !probe) {
				l.stored, skipped[l] = true, true
				return nil
			}
			if probe {
				l.probe = string(rec.Id)
			}
			in.take(l, bytes.Clone(k))
		}
		in.queue(outboxItem{id: rec.Id, env: rec.Envelope, lane: l, resent: true})
		return nil
	})
	switch {
	case err == nil:
		// Everything after from was read, and everything up to from had
		// been (a pass from the start, or from a point before the
		// unread part). A lane that skipped nothing here and was covered
		// has nothing left in the store.
		if from == nil || !in.backlog || bytes.Compare(from, in.cursor) <= 0 {
			in.backlog, in.cursor = false, nil
		}
		if from == nil {
			in.strayFailed = false // every failed send without a lane is queued
		}
		for _, l := range in.lanes {
			if l.stored && !skipped[l] && (from == nil || (l.read != nil && bytes.Compare(from, l.read) <= 0)) {
				l.stored = false
				in.forgetIdle(l)
			}
		}
	case errors.Is(err, errScanFull):
		// Stopped at last. What follows was read before, unless it is
		// past the cursor of an unread part; failed sends of the windows
		// after it are offered again by the next timed pass.
		if in.backlog && bytes.Compare(last, in.cursor) > 0 {
			in.cursor = bytes.Clone(last)
		}
		left = true
	default:
		// Left to the timed pass (a pass going on would scan again at
		// once, and fail again).
		in.deps.log.Warn("outbox scan failed", "err", err)
		in.backlog, left = false, true
		// What it did not read is under no mark now: the next timed pass
		// reads the whole outbox, not only probes.
		in.sweptAt = time.Time{}
	}
	return left || heldBack || len(skipped) > 0 || in.backlog
}

// restoreOutboxSeq sets the outbox sequence past every stored record, so
// that a send after a restart sorts after the backlog even if the clock
// went back. It reads keys only.
// It returns how many records the outbox holds.
func (in *installation) restoreOutboxSeq() int {
	prefix := persistence.OutboxPrefix(in.id)
	n := 0
	_ = in.deps.store.Scan(prefix, func(k, _ []byte) error {
		n++
		if id, ok := persistence.OutboxIDOf(prefix, k); ok && len(id) == outboxIDSize {
			in.outboxSeq = max(in.outboxSeq, binary.BigEndian.Uint64(id))
		}
		return nil
	})
	return n
}
