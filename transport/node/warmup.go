package node

import (
	"sync"
	"time"
)

// warmUp holds the envelopes with a recipient that a node is asked to
// confirm right after it started, for Options.WarmUp. Confirmation is per
// identity, so the node must know every node that hosts a device of the
// recipient before it counts their answers; right after a start it knows
// only those that have announced themselves since. Every live peer that
// knows this node greets it each HelloInterval, and every configured one
// answers its greeting at once, but a peer whose connection to this node
// broke while it was down greets it only once the remote layer has
// reconnected: protoactor's endpoint writer tries again every 2 s however
// long the outage was (1.8 s measured here). So the hold is a fixed time,
// not "until the configured peers have spoken": a node cannot know which
// unconfigured peers will greet it, and one that did not list bob2's node
// would otherwise confirm on bob1's word alone. The default (three
// HelloIntervals, 3 s) covers that reconnect; a shorter WarmUp, or a peer
// that is itself still starting, may still be missed.
type warmUp struct {
	done  chan struct{} // closed when the hold ends
	once  sync.Once
	timer *time.Timer // guarded by the node's mu
}

// startLocked starts the hold (the node's mu held).
func (w *warmUp) startLocked(d time.Duration) {
	w.done = make(chan struct{})
	if d < 0 {
		w.end()
		return
	}
	w.timer = time.AfterFunc(d, w.end)
}

// end ends the hold (idempotent).
func (w *warmUp) end() { w.once.Do(func() { close(w.done) }) }

// stopLocked stops the timer (Close, the node's mu held).
func (w *warmUp) stopLocked() {
	if w.timer != nil {
		w.timer.Stop()
	}
}
