package node

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// warmUp is what a node that just started waits for before it confirms
// envelopes with a recipient (Options.WarmUp). Confirmation is per
// identity, so the node must know every node that hosts a device of the
// recipient before it counts the answers; right after a start it knows
// only those that have announced themselves. Every live peer that knows
// this node greets it each HelloInterval, and every configured peer
// answers its greeting at once, so the hold ends:
//   - once at least minWarmUp (1.5 HelloIntervals) has passed, so that
//     every live peer that knows this node has greeted it, and every
//     configured peer has settled: its Hellos announced the same topics,
//     and some, for a HelloInterval (a peer's engine subscribes its
//     installations' topics one after another, after its store is open,
//     so its first Hellos may announce none or only some);
//   - or at the latest after Options.WarmUp.
//
// A node with no configured peer (one that others list: it cannot know who
// will greet it) holds for the whole WarmUp, and so does one with a
// configured peer that never settles: down; hosting nothing; announcing
// itself under an address that is none of those its --peer form resolves
// to; or whose engine pauses longer than a HelloInterval between two
// subscriptions. All fields but done are guarded by the node's mu.
type warmUp struct {
	done     chan struct{} // closed when the hold ends
	once     sync.Once
	minOver  bool
	interval time.Duration
	// pending are the configured peers not settled yet, by --peer form;
	// aliases maps each address they may announce to that form.
	pending map[string]*warmPeer
	aliases map[string]string
	timers  []*time.Timer
}

type warmPeer struct {
	topics string    // the last Hello's topics, sorted and joined
	since  time.Time // when a Hello first announced them
}

// minWarmUp is the shortest hold, in HelloIntervals.
const minWarmUp = 1.5

// startLocked sets the hold up for a node listening on self; lock is the
// node's mu, which guards the hold.
func (w *warmUp) startLocked(o Options, self string, lock sync.Locker) {
	w.done = make(chan struct{})
	w.pending, w.aliases = map[string]*warmPeer{}, map[string]string{}
	w.interval = o.HelloInterval
	if o.WarmUp < 0 {
		w.end()
		return
	}
	for _, p := range o.Peers {
		forms := addressForms(p)
		if slices.ContainsFunc(forms, func(f string) bool { return isSelf(f, self) }) {
			continue
		}
		w.pending[p] = &warmPeer{}
		for _, f := range forms {
			w.aliases[f] = p
		}
	}
	w.timers = append(w.timers, time.AfterFunc(o.WarmUp, w.end))
	if len(w.pending) == 0 {
		return // nobody to wait for: the whole WarmUp
	}
	min := min(o.WarmUp, time.Duration(minWarmUp*float64(o.HelloInterval)))
	w.timers = append(w.timers,
		time.AfterFunc(min, func() {
			lock.Lock()
			defer lock.Unlock()
			w.minOver = true
			w.checkLocked()
		}))
}

// helloLocked records a Hello from address announcing topics.
func (w *warmUp) helloLocked(address string, topics []string) {
	key, ok := w.aliases[address]
	if !ok {
		return
	}
	p := w.pending[key]
	if p == nil || len(topics) == 0 {
		return
	}
	sorted := slices.Clone(topics)
	slices.Sort(sorted)
	t := strings.Join(sorted, "\x00")
	now := time.Now()
	if p.topics != t || p.since.IsZero() {
		p.topics, p.since = t, now
		return
	}
	if now.Sub(p.since) >= w.interval {
		delete(w.pending, key)
		w.checkLocked()
	}
}

func (w *warmUp) checkLocked() {
	if w.minOver && len(w.pending) == 0 {
		w.end()
	}
}

// end ends the hold (idempotent), and stops its timers.
func (w *warmUp) end() {
	w.once.Do(func() { close(w.done) })
	w.stop()
}

// stop stops the timers (Close).
func (w *warmUp) stop() {
	for _, t := range w.timers {
		t.Stop()
	}
}

// resolveTimeout bounds the lookup of a --peer given by name.
const resolveTimeout = time.Second

// addressForms are the addresses a peer given as host:port may announce:
// the form itself and, for a host name, each of its IP addresses.
func addressForms(p string) []string {
	forms := []string{p}
	host, port, err := net.SplitHostPort(p)
	if err != nil || net.ParseIP(host) != nil {
		return forms
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return forms
	}
	for _, ip := range ips {
		forms = append(forms, net.JoinHostPort(ip, port))
	}
	return forms
}

// isSelf reports whether address f is this node's (listening on self): the
// same port on a loopback or unspecified address, or on self's host.
func isSelf(f, self string) bool {
	if f == self {
		return true
	}
	host, port, err := net.SplitHostPort(f)
	shost, sport, err2 := net.SplitHostPort(self)
	if err != nil || err2 != nil || port != sport {
		return false
	}
	ip := net.ParseIP(host)
	return host == shost || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified()))
}
