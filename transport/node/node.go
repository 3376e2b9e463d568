// Package node is ratchetd's networked transport: nodes on different
// machines exchange signed envelopes over protoactor-go's remote layer
// (gRPC). There is no home-made wire protocol: every message between nodes is
// a protobuf message of messages/transport.proto sent to the peer's node
// actor.
//
// Nodes address each other by host:port. Each node announces the topics it
// subscribes to (Hello, Subscribed), and publishing an envelope sends it to
// the nodes that announced its topic; a node acknowledges an envelope once
// its local subscribers have processed it (for ratchetd: once the receiving
// installation has committed it), and says whether one of them was its
// recipient: partitioned topics are shared, and a partition-mate's
// acknowledgement alone does not confirm an envelope to its sender. A
// publish that no node acknowledged is an error, so the engine keeps it in
// its durable outbox and tries again: nothing is lost when a peer node is
// down, and what is sent again is the same ciphertext.
//
// Received envelopes are checked before anything else (transport.Open: size
// cap, signature recovery); a refused one is dropped and counted by reason.
// A peer node has at most MaxInflightPerPeer envelopes in processing: beyond
// that it is refused, so a flood from one peer is bounded in memory and does
// not delay the others.
package node

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// actorName is the name of every node's actor.
const actorName = "ratchetd-node"

// Defaults.
const (
	DefaultMaxInflightPerPeer = 256
	DefaultDeliverTimeout     = 5 * time.Second
	DefaultHelloInterval      = time.Second
	// DefaultMaxPeers bounds the peer nodes a node remembers and greets.
	DefaultMaxPeers = 1024
	// DefaultMaxTopicsPerPeer bounds the topics one peer node announces
	// (two per hosted account, plus public chats).
	DefaultMaxTopicsPerPeer = 1 << 16
)

// silentHellos: a peer node whose last announcement (Hello or Subscribed)
// is older than this many HelloIntervals was silent (cut off, or down; a
// live one sends two Hellos per interval, its own and its reply to ours),
// so its next Hello reports every topic it announces to the Watchers, not
// only new ones. A restart, however quick, is told by the announcement's
// incarnation.
const silentHellos = 3

// announced is what a node remembers of a peer's last announcement.
type announced struct {
	at          time.Time
	incarnation uint64
}

// ErrNoSubscriber: no node (this one included) subscribes to the topic yet.
var ErrNoSubscriber = errors.New("node: no subscriber for the topic")

// ErrNoRecipient: every node that subscribes to the topic accepted the
// envelope, but none hosts its recipient (they are partition-mates of it):
// the recipient's node is down or not known yet, and the sender keeps it.
var ErrNoRecipient = errors.New("node: no subscriber is the envelope's recipient")

// ErrNotDelivered: a node that subscribes to the topic did not acknowledge
// the envelope (down, busy or refusing).
var ErrNotDelivered = errors.New("node: envelope not acknowledged")

// Options configure a node.
type Options struct {
	// Listen is host:port to listen on (port 0: any free port).
	Listen string
	// Peers are host:port of other nodes; more are learned from their Hellos.
	Peers []string
	// MaxPayload caps an envelope's payload (transport.DefaultMaxPayload).
	MaxPayload int
	// MaxInflightPerPeer bounds what one peer node can have in processing.
	MaxInflightPerPeer int
	// DeliverTimeout bounds the wait for a peer's acknowledgement.
	DeliverTimeout time.Duration
	// HelloInterval is how often a node re-announces itself to its peers
	// (so a restarted peer learns its topics again).
	HelloInterval time.Duration
	// MaxPeers bounds the peer nodes remembered (DefaultMaxPeers): a Hello
	// or Subscribed from a new address beyond it is dropped ("peer-limit"),
	// so forged announcements cannot grow the table or make this node
	// greet arbitrary addresses.
	MaxPeers int
	// MaxTopicsPerPeer bounds the topics remembered for one peer
	// (DefaultMaxTopicsPerPeer); more are dropped ("topic-limit").
	MaxTopicsPerPeer int
	// PeerExpiry: a peer whose last announcement is older is not a target
	// of PublishConfirm until it announces itself again (at least
	// silentHellos HelloIntervals; zero, the default: a peer is waited for
	// until this node restarts). What only it hosted then fails (no
	// subscriber, or no recipient) and stays in the sender's outbox, and a
	// node gone for good no longer holds up every envelope on the topics it
	// announced (partitioned topics are shared). The price: confirmation
	// is per identity, so a device of a multi-device recipient on an
	// expired node misses what another device of that identity took. A
	// deployment whose nodes come and go sets it; one with multi-device
	// users whose nodes may stay away for long does not.
	PeerExpiry time.Duration
	// WarmUp: for this long after Start, PublishConfirm holds envelopes
	// with a recipient (zero: silentHellos HelloIntervals; negative: no
	// hold; see warmUp); then they go to the nodes this one knows.
	// Confirmation is per identity: a node that restarted and has heard
	// from bob's desktop's node, not yet from his phone's, would otherwise
	// confirm the backlog its engine offers at once (the first
	// announcement wakes it) on the desktop's word alone, and the phone
	// would never get it.
	WarmUp time.Duration
	Logger *slog.Logger
}

// Node is one node of the networked transport. It implements
// transport.Transport, transport.Confirmer and transport.Watcher.
type Node struct {
	o       Options
	sys     *actor.ActorSystem
	rem     *remote.Remote
	address string

	mu       sync.Mutex
	subs     map[string][]*subscription
	peers    map[string]map[string]bool // address -> topics
	known    map[string]bool            // addresses to greet
	inflight map[string]int
	drops    map[string]int64
	closed   bool
	stop     chan struct{}
	// incarnation is random per Start (Hello.incarnation). lastHeard is
	// each peer's last announcement (as peers, bounded by MaxPeers);
	// watchers are WatchSubscribers' callbacks.
	incarnation uint64
	lastHeard   map[string]announced
	watchers    map[int]func([]string)
	warm        warmUp
	watcherN    int

	published, sent, received, delivered atomic.Int64
	// bg tracks the goroutines that may still send to other nodes (acks,
	// deliveries), so Close lets them finish before the remote layer stops.
	bg  sync.WaitGroup
	pid *actor.PID
	tap atomic.Pointer[func(*messages.Envelope)]
}

// SetTap calls fn with every envelope this node publishes (tests,
// diagnostics); nil removes it.
func (n *Node) SetTap(fn func(*messages.Envelope)) {
	if fn == nil {
		n.tap.Store(nil)
		return
	}
	n.tap.Store(&fn)
}

// Start starts a node: its actor system, the remote layer and the node
// actor, and greets the peers.
func Start(o Options) (*Node, error) {
	if o.MaxInflightPerPeer <= 0 {
		o.MaxInflightPerPeer = DefaultMaxInflightPerPeer
	}
	if o.DeliverTimeout <= 0 {
		o.DeliverTimeout = DefaultDeliverTimeout
	}
	if o.HelloInterval <= 0 {
		o.HelloInterval = DefaultHelloInterval
	}
	if o.PeerExpiry > 0 {
		o.PeerExpiry = max(o.PeerExpiry, silentHellos*o.HelloInterval)
	}
	if o.WarmUp == 0 {
		o.WarmUp = silentHellos * o.HelloInterval
	}
	if o.MaxPeers <= 0 {
		o.MaxPeers = DefaultMaxPeers
	}
	if o.MaxTopicsPerPeer <= 0 {
		o.MaxTopicsPerPeer = DefaultMaxTopicsPerPeer
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	host, portS, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("node: listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return nil, fmt.Errorf("node: listen port %q: %w", portS, err)
	}
	// Listen once here, for the port when none is given and for an error
	// the caller can test (errors.Is(err, syscall.EADDRINUSE)): protoactor
	// listens again in remote.Start and only panics with the text.
	l, err := net.Listen("tcp", net.JoinHostPort(host, portS))
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	n := &Node{
		o: o, subs: map[string][]*subscription{}, peers: map[string]map[string]bool{}, known: map[string]bool{},
		inflight: map[string]int{}, drops: map[string]int64{}, stop: make(chan struct{}),
		lastHeard: map[string]announced{}, watchers: map[int]func([]string){}, incarnation: rand.Uint64() | 1,
	}
	n.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return o.Logger }))
	n.rem = remote.NewRemote(n.sys, remote.Configure(host, port))
	if err := startRemote(n.rem); err != nil {
		n.sys.Shutdown()
		return nil, fmt.Errorf("node: listen on %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	n.address = net.JoinHostPort(host, strconv.Itoa(port))
	pid, err := n.sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &nodeActor{n: n} }), actorName)
	if err != nil {
		n.rem.Shutdown(false)
		return nil, err
	}
	n.pid = pid
	n.mu.Lock() // the node actor may be handling a Hello already
	for _, p := range o.Peers {
		if p != n.address {
			n.known[p] = true
		}
	}
	n.warm.startLocked(o.WarmUp)
	n.mu.Unlock()
	go n.greet()
	return n, nil
}

// Address is this node's host:port.
func (n *Node) Address() string { return n.address }

func pidOf(address string) *actor.PID { return actor.NewPID(address, actorName) }

// greet sends Hello to every known peer now and every HelloInterval.
func (n *Node) greet() {
	t := time.NewTicker(n.o.HelloInterval)
	defer t.Stop()
	for {
		n.mu.Lock()
		hello := &messages.Hello{Address: n.address, Topics: n.topicsLocked(), Incarnation: n.incarnation}
		var to []string
		for a := range n.known {
			to = append(to, a)
		}
		n.mu.Unlock()
		for _, a := range to {
			n.sys.Root.Send(pidOf(a), hello)
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// WatchSubscribers calls fn, on the node actor's goroutine, with the topics
// a peer node announced for the first time, and with every topic of a peer
// node that restarted (a new incarnation) or announces itself after it was
// silent (silentHellos): what was sent to those topics and refused may now
// be taken.
func (n *Node) WatchSubscribers(fn func(topics []string)) (cancel func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.watcherN++
	id := n.watcherN
	n.watchers[id] = fn
	return func() {
		n.mu.Lock()
		delete(n.watchers, id)
		n.mu.Unlock()
	}
}

// heard tells the watchers of topics (called without n.mu).
func (n *Node) heard(topics []string) {
	if len(topics) == 0 {
		return
	}
	n.mu.Lock()
	fns := make([]func([]string), 0, len(n.watchers))
	for _, fn := range n.watchers {
		fns = append(fns, fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(topics)
	}
}

func (n *Node) topicsLocked() []string {
	ts := make([]string, 0, len(n.subs))
	for t, l := range n.subs {
		if len(l) > 0 {
			ts = append(ts, t)
		}
	}
	sort.Strings(ts)
	return ts
}

// Subscribe registers a handler for a topic and announces the topic.
func (n *Node) Subscribe(topic string, h transport.Handler) (func(), error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, transport.ErrClosed
	}
	s := newSubscription(topic, h)
	n.subs[topic] = append(n.subs[topic], s)
	var to []string
	for a := range n.known {
		to = append(to, a)
	}
	n.mu.Unlock()
	for _, a := range to {
		n.sys.Root.Send(pidOf(a), &messages.Subscribed{Address: n.address, Topic: topic, Incarnation: n.incarnation})
	}
	return func() { n.unsubscribe(s) }, nil
}

func (n *Node) unsubscribe(s *subscription) {
	n.mu.Lock()
	// DeleteFunc clears the freed slot, so the subscription and its
	// handler's actor do not stay reachable (see transport.Memory).
	if kept := slices.DeleteFunc(n.subs[s.topic], func(x *subscription) bool { return x == s }); len(kept) > 0 {
		n.subs[s.topic] = kept
	} else {
		delete(n.subs, s.topic)
	}
	n.mu.Unlock()
	s.close()
}

// Publish sends an envelope without waiting for acknowledgements (contact
// codes, public chats: nothing that must survive a loss). It must not
// wait: an actor may publish to a topic it subscribes to itself. What must
// arrive goes through PublishConfirm, from the engine's outbox.
func (n *Node) Publish(env *messages.Envelope) error {
	errc := make(chan error, 1)
	n.publish(env, func(err error) {
		select {
		case errc <- err:
		default:
		}
	})
	select {
	case err := <-errc:
		if errors.Is(err, transport.ErrBadEnvelope) {
			return err // refused before anything was sent
		}
	default:
	}
	return nil
}

// PublishConfirm sends an envelope and calls done, from another goroutine,
// once every subscribing node acknowledged it and, for an envelope with a
// recipient, one of them took it as its recipient's (ErrNoRecipient when
// only partition-mates did); or with the failures.
func (n *Node) PublishConfirm(env *messages.Envelope, done func(error)) {
	if env != nil && len(env.Recipient) > 0 {
		select {
		case <-n.warm.done:
		default:
			// Held for the WarmUp, off the caller's goroutine (done is
			// called from another one in any case).
			go func() {
				select {
				case <-n.warm.done:
					n.publish(env, done)
				case <-n.stop:
					done(transport.ErrClosed)
				}
			}()
			return
		}
	}
	n.publish(env, done)
}

// publish is PublishConfirm without the WarmUp (Publish: nothing to
// confirm).
func (n *Node) publish(env *messages.Envelope, done func(error)) {
	if env == nil || len(env.Payload) > n.maxPayload() || env.Topic == "" {
		done(fmt.Errorf("%w: refused on publish", transport.ErrBadEnvelope))
		return
	}
	n.published.Add(1)
	if fn := n.tap.Load(); fn != nil {
		(*fn)(env)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		done(transport.ErrClosed)
		return
	}
	local := append([]*subscription(nil), n.subs[env.Topic]...)
	var targets []string
	now := time.Now()
	for a, topics := range n.peers {
		if topics[env.Topic] && (n.o.PeerExpiry <= 0 || now.Sub(n.lastHeard[a].at) <= n.o.PeerExpiry) {
			targets = append(targets, a)
		}
	}
	n.mu.Unlock()
	n.o.Logger.Debug("node publish", "topic", env.Topic, "local", len(local), "remote", targets)
	if len(local) == 0 && len(targets) == 0 {
		done(fmt.Errorf("%w: %s", ErrNoSubscriber, env.Topic))
		return
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		var errs []error
		// reached: an envelope without a recipient (a public chat) needs
		// every subscribing node's acceptance only; one with a recipient
		// also needs a node that hosts the recipient to say it took it, as
		// its partition-mates accept it as not theirs.
		reached := len(env.Recipient) == 0
		if len(local) > 0 {
			d, err := transport.Open(env, n.o.MaxPayload)
			if err != nil {
				errs = append(errs, err)
			} else if r := <-dispatch(local, d); !r.accepted {
				errs = append(errs, fmt.Errorf("%w: a local subscriber did not take it", ErrNotDelivered))
			} else {
				reached = reached || r.recipient
			}
		}
		futures := make([]actor.Future, len(targets))
		msg := &messages.Deliver{Envelope: env, From: n.address}
		for i, a := range targets {
			futures[i] = n.sys.Root.RequestFuture(pidOf(a), msg, n.o.DeliverTimeout)
			n.sent.Add(1)
		}
		for i, f := range futures {
			res, err := f.Result()
			ack, _ := res.(*messages.DeliverAck)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%w by %s: %v", ErrNotDelivered, targets[i], err))
			case ack == nil || !ack.Accepted:
				errs = append(errs, fmt.Errorf("%w by %s: %s", ErrNotDelivered, targets[i], ack.GetReason()))
			default:
				reached = reached || ack.Recipient
			}
		}
		if len(errs) == 0 && !reached {
			errs = append(errs, fmt.Errorf("%w: %w on %s", ErrNotDelivered, ErrNoRecipient, env.Topic))
		}
		if len(errs) > 0 {
			n.o.Logger.Debug("node publish not confirmed", "topic", env.Topic, "err", errors.Join(errs...))
		}
		done(errors.Join(errs...))
	}()
}

// DeliverTo sends an envelope to one node, whether or not it announced the
// topic, and waits for its answer (diagnostics and tests).
func (n *Node) DeliverTo(address string, env *messages.Envelope) error {
	res, err := n.sys.Root.RequestFuture(pidOf(address), &messages.Deliver{Envelope: env, From: n.address}, n.o.DeliverTimeout).Result()
	if err != nil {
		return err
	}
	if ack, _ := res.(*messages.DeliverAck); ack == nil || !ack.Accepted {
		return fmt.Errorf("%w: %s", ErrNotDelivered, ack.GetReason())
	}
	return nil
}

// Stats is what a node counted.
type Stats struct {
	Published, Sent, Received, Delivered int64
	// Dropped counts refused envelopes by reason: bad-envelope, forged,
	// oversized, unknown-topic, flood, closed, not-taken, no-reply-address.
	Dropped map[string]int64
	Peers   []string
	// PeerTopics is how many topics each peer announced.
	PeerTopics map[string]int
}

// Stats returns the counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := Stats{Published: n.published.Load(), Sent: n.sent.Load(), Received: n.received.Load(), Delivered: n.delivered.Load(), Dropped: map[string]int64{}, PeerTopics: map[string]int{}}
	for k, v := range n.drops {
		s.Dropped[k] = v
	}
	for a, topics := range n.peers {
		s.Peers = append(s.Peers, a)
		s.PeerTopics[a] = len(topics)
	}
	sort.Strings(s.Peers)
	return s
}

func (n *Node) drop(reason string) {
	n.mu.Lock()
	n.drops[reason]++
	n.mu.Unlock()
}

// startRemote starts r, which panics when it cannot listen (the address
// taken since Start's own listen): a node that cannot start returns an
// error instead.
func startRemote(r *remote.Remote) (err error) {
	defer func() {
		switch p := recover().(type) {
		case nil:
		case error:
			err = p
		default:
			err = fmt.Errorf("%v", p)
		}
	}()
	r.Start()
	return nil
}

// closeGrace is how long Close lets the remote layer shut down gracefully.
const closeGrace = time.Second

// Close stops greeting, closes the subscriptions and shuts the remote layer
// down.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.stop)
	n.warm.stopLocked()
	var all []*subscription
	for _, l := range n.subs {
		all = append(all, l...)
	}
	n.subs = map[string][]*subscription{}
	n.mu.Unlock()
	for _, s := range all {
		s.close()
	}
	// Nothing of ours may send once the remote layer stops (protoactor's
	// endpoint manager races with senders during its shutdown): stop the
	// node actor, and let the acknowledgements in flight go first.
	n.sys.Root.StopFuture(n.pid).Wait()
	waited := make(chan struct{})
	go func() { n.bg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(n.o.DeliverTimeout):
	}
	// A graceful remote shutdown waits for unreachable peers' endpoints
	// (about 10 s, and its gRPC listener stays open until then); what is
	// unsent then is sent again from the outboxes. After closeGrace the
	// gRPC server is stopped outright, which closes its listener at once:
	// when Close returns the address is free for a node started again on it
	// (remote.Start panics on "address already in use").
	done := make(chan struct{})
	go func() { n.rem.Shutdown(true); close(done) }()
	select {
	case <-done:
	case <-time.After(closeGrace):
		n.rem.Shutdown(false) // grpc.Server.Stop: safe during GracefulStop
	}
	n.sys.Shutdown()
	return nil
}

// nodeActor receives what other nodes send.
type nodeActor struct{ n *Node }

func (a *nodeActor) Receive(ctx actor.Context) {
	n := a.n
	switch m := ctx.Message().(type) {
	case *messages.Hello:
		n.o.Logger.Debug("node hello", "from", m.Address, "topics", len(m.Topics))
		if m.Address == "" || m.Address == n.address {
			return
		}
		n.mu.Lock()
		if !n.admitLocked(m.Address) {
			n.mu.Unlock()
			return
		}
		if len(m.Topics) > n.o.MaxTopicsPerPeer {
			n.drops["topic-limit"]++
			m.Topics = m.Topics[:n.o.MaxTopicsPerPeer]
		}
		back := n.backLocked(m.Address, m.Incarnation)
		old := n.peers[m.Address]
		topics := make(map[string]bool, len(m.Topics))
		var news []string
		for _, t := range m.Topics {
			if !topics[t] && (back || !old[t]) {
				news = append(news, t)
			}
			topics[t] = true
		}
		n.peers[m.Address] = topics
		n.known[m.Address] = true
		reply := &messages.Hello{Address: n.address, Topics: n.topicsLocked(), Reply: true, Incarnation: n.incarnation}
		n.mu.Unlock()
		if !m.Reply {
			ctx.Send(pidOf(m.Address), reply)
		}
		n.heard(news)
	case *messages.Subscribed:
		if m.Address == "" || m.Address == n.address {
			return
		}
		n.mu.Lock()
		if !n.admitLocked(m.Address) {
			n.mu.Unlock()
			return
		}
		if n.backLocked(m.Address, m.Incarnation) || n.peers[m.Address] == nil {
			// A peer restarted or back from a silence: what it announced
			// before is stale, and its next Hello announces the rest anew
			// (news to the Watchers, as this topic is).
			n.peers[m.Address] = map[string]bool{}
		}
		had := n.peers[m.Address][m.Topic]
		if !had && len(n.peers[m.Address]) >= n.o.MaxTopicsPerPeer {
			n.drops["topic-limit"]++
			n.mu.Unlock()
			return
		}
		n.peers[m.Address][m.Topic] = true
		n.known[m.Address] = true
		n.mu.Unlock()
		if !had {
			n.heard([]string{m.Topic})
		}
	case *messages.Deliver:
		a.deliver(ctx, m)
	}
}

// backLocked records an announcement of address and reports whether the
// peer is new, restarted (another incarnation; 0, from a node that sends
// none, tells nothing) or back from a silence: all its topics are news.
func (n *Node) backLocked(address string, incarnation uint64) bool {
	now := time.Now()
	last, heard := n.lastHeard[address]
	n.lastHeard[address] = announced{at: now, incarnation: incarnation}
	return !heard || now.Sub(last.at) > silentHellos*n.o.HelloInterval ||
		(incarnation != 0 && incarnation != last.incarnation)
}

// admitLocked reports whether an announcement from address may be
// remembered: a known peer always, a new one while there are fewer than
// MaxPeers.
func (n *Node) admitLocked(address string) bool {
	if n.known[address] || n.peers[address] != nil {
		return true
	}
	if len(n.known) >= n.o.MaxPeers || len(n.peers) >= n.o.MaxPeers {
		n.drops["peer-limit"]++
		return false
	}
	return true
}

// deliver checks an envelope from another node and hands it to the local
// subscribers; the acknowledgement is sent once they have processed it.
func (a *nodeActor) deliver(ctx actor.Context, m *messages.Deliver) {
	n := a.n
	n.received.Add(1)
	n.o.Logger.Debug("node deliver", "from", m.From, "topic", m.GetEnvelope().GetTopic())
	replyTo := ctx.Sender()
	refuse := func(reason string) {
		n.drop(reason)
		if replyTo != nil {
			ctx.Send(replyTo, &messages.DeliverAck{Accepted: false, Reason: reason})
		}
	}
	// The in-flight cap is counted against the connection the envelope
	// came on, not a name the peer chose; a delivery that cannot be
	// answered is refused.
	if replyTo == nil || replyTo.Address == "" {
		n.drop("no-reply-address")
		return
	}
	from := replyTo.Address
	d, err := transport.Open(m.Envelope, n.o.MaxPayload)
	if err != nil {
		reason := "bad-envelope"
		switch {
		case m.Envelope != nil && len(m.Envelope.Payload) > n.maxPayload():
			reason = "oversized"
		case errors.Is(err, transport.ErrForged):
			reason = "forged"
		}
		refuse(reason)
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		refuse("closed")
		return
	}
	local := append([]*subscription(nil), n.subs[d.Topic]...)
	if len(local) > 0 && n.inflight[from] >= n.o.MaxInflightPerPeer {
		n.mu.Unlock()
		refuse("flood")
		return
	}
	if len(local) > 0 {
		n.inflight[from]++
	}
	n.mu.Unlock()
	if len(local) == 0 {
		// Nobody here listens (yet, or any more): not taken, so the sender
		// keeps it and tries again once the topics are announced again.
		refuse("unknown-topic")
		return
	}
	wait := dispatch(local, d)
	root := ctx.ActorSystem().Root
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		r := <-wait
		n.mu.Lock()
		if n.inflight[from]--; n.inflight[from] <= 0 {
			delete(n.inflight, from)
		}
		n.mu.Unlock()
		ack := &messages.DeliverAck{Accepted: r.accepted, Recipient: r.recipient}
		if r.accepted {
			n.delivered.Add(1)
		} else {
			n.drop("not-taken")
			ack.Reason = "not taken by a subscriber (closing, or its commit failed)"
		}
		root.Send(replyTo, ack)
	}()
}

func (n *Node) maxPayload() int {
	if n.o.MaxPayload > 0 {
		return n.o.MaxPayload
	}
	return transport.DefaultMaxPayload
}
