package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/transport"
)

// scenario is one workload: setup builds accounts and sessions (not
// measured), drive sends until the run says stop.
type scenario interface {
	setup(ctx context.Context, r *run) error
	drive(ctx context.Context, r *run) error
	// ceiling is the crypto-only loop one delivered message corresponds to.
	ceiling() primitive
	// senders is how many conversations send at once: the ceiling loop
	// runs on as many goroutines (at most one per CPU the process may
	// use, and at most GOMAXPROCS).
	senders() int
}

func newScenario(name string) scenario {
	switch name {
	case Burst:
		return &burst{}
	case PingPong:
		return &pingpong{}
	case X3DH:
		return &x3dhScenario{}
	case Fanout:
		return &fanout{}
	default:
		return &sessions{}
	}
}

// receiveTimeout is how long a sender waits for one receipt before it
// counts the message as lost.
const receiveTimeout = 10 * time.Second

// run is the state of one load-generator run shared by the scenario, the
// handler, the sampler and the metrics.
type run struct {
	cfg   Config
	eng   *ratchetd.Engine
	probe *probe

	routes sync.Map // recipient installation id → func(ratchetd.Message)

	measuring atomic.Bool
	reserved  atomic.Int64 // deliveries reserved by take
	deadline  time.Time
	stop      chan struct{}
	stopOnce  sync.Once
	// conversations counts the conversations set up (a gauge for metrics).
	conversations atomic.Int64
}

// handle is the engine's Handler: it measures probe messages and passes
// every message to the route of its recipient installation.
func (r *run) handle(m ratchetd.Message) {
	if _, ok := r.probe.observe(m); ok && r.measuring.Load() {
		r.checkBudget()
	}
	if f, ok := r.routes.Load(m.RecipientInstallation); ok {
		f.(func(ratchetd.Message))(m)
	}
}

// route registers what the handler does with messages for one installation
// (it must not block).
func (r *run) route(installation string, f func(ratchetd.Message)) { r.routes.Store(installation, f) }

// take reserves n deliveries of the message budget: false once the run is
// over (deadline, budget, or stop).
func (r *run) take(n int) bool {
	select {
	case <-r.stop:
		return false
	default:
	}
	if !r.deadline.IsZero() && time.Now().After(r.deadline) {
		r.halt()
		return false
	}
	if r.cfg.Messages > 0 {
		if r.reserved.Add(int64(n))-int64(n) >= int64(r.cfg.Messages) {
			r.halt()
			return false
		}
	}
	return true
}

func (r *run) checkBudget() {
	if r.cfg.Messages > 0 && r.probe.delivered.Load() >= int64(r.cfg.Messages) {
		r.halt()
	}
}

func (r *run) halt() { r.stopOnce.Do(func() { close(r.stop) }) }

// send is one measured Send: it counts the deliveries it addressed and
// any error.
func (r *run) send(from *ratchetd.Account, to *ratchetd.Account, conv int) (int, error) {
	rep, err := from.Send(to.Identity(), r.probe.stamp(conv))
	n := len(rep.Installations)
	if err != nil {
		r.probe.fail(fmt.Errorf("send: %w", err))
		return n, err
	}
	r.probe.sent.Add(1)
	r.probe.expected.Add(int64(n))
	return n, nil
}

// drain waits until every addressed delivery was received or the timeout
// passed; what is missing then is counted as lost.
func (r *run) drain() (lost int64) {
	deadline := time.Now().Add(r.cfg.DrainTimeout)
	for {
		missing := r.probe.expected.Load() - r.probe.delivered.Load()
		if missing <= 0 {
			return 0
		}
		if time.Now().After(deadline) {
			return missing
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Run executes one load-generator run.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, probe: newProbe(cfg.Payload, cfg.Seed), stop: make(chan struct{})}
	opts := ratchetd.Options{
		Transport: transport.NewMemory(transport.MemoryOptions{}),
		Handler:   r.handle,
		Logger:    cfg.Logger,
	}
	var dir string
	if cfg.Durable {
		var cleanup func()
		var err error
		dir, cleanup, err = dataDir(cfg.Dir)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		opts.Dir = dir
		opts.NoSync = cfg.NoSync
	}
	opts.CommitDelay = cfg.CommitDelay
	eng, err := ratchetd.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("loadgen: open engine: %w", err)
	}
	r.eng = eng
	closed := false
	closeEngine := func() error {
		if closed {
			return nil
		}
		closed = true
		err := eng.Close()
		opts.Transport.Close()
		return err
	}
	defer closeEngine()

	sc := newScenario(cfg.Scenario)
	res := newResult(cfg)
	// Metrics cover the setup too: a large sessions setup takes a while.
	if cfg.Monitor != nil {
		cfg.Monitor.attach(r)
		defer cfg.Monitor.detach(r)
	}
	heapBefore := heapInUse()
	setupStart := time.Now()
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "\r%s: setting up %d conversations…", cfg.Scenario, cfg.Sessions)
	}
	if err := sc.setup(ctx, r); err != nil {
		return nil, fmt.Errorf("loadgen: %s setup: %w", cfg.Scenario, err)
	}
	res.SetupSeconds = time.Since(setupStart).Seconds()
	if _, ok := sc.(*sessions); ok {
		after := heapInUse()
		res.HeapPerConversation = float64(int64(after)-int64(heapBefore)) / float64(cfg.Sessions)
	}
	// The ceiling brackets the measured phase: half of it just before,
	// half once the engine is closed (A-B-A), so that a neighbour's load
	// on a shared machine weighs on the ceiling as on the engine.
	ceilingHalf := func() (Ceiling, error) {
		d := cfg.Ceiling / 2
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\r\033[Kmeasuring the crypto-only ceiling (%v)…", d)
		}
		c, err := measureCeiling(sc.ceiling(), cfg.Payload, ceilingCores(sc.senders()), d)
		if err != nil {
			return Ceiling{}, fmt.Errorf("loadgen: ceiling: %w", err)
		}
		return c, nil
	}
	var first Ceiling
	if cfg.Ceiling > 0 {
		var err error
		if first, err = ceilingHalf(); err != nil {
			return nil, err
		}
	}
	before := sampleUsage()
	start := time.Now()
	if cfg.Duration > 0 {
		r.deadline = start.Add(cfg.Duration)
	}
	r.measuring.Store(true)
	// An interrupt ends the measured phase early; the run still drains
	// and reports.
	unwatch := context.AfterFunc(ctx, r.halt)
	defer unwatch()
	smp := startSampler(r, start)
	driveErr := sc.drive(ctx, r)
	r.halt()
	lost := r.drain()
	end := time.Now()
	after := sampleUsage()
	r.measuring.Store(false)
	smp.stop(end)
	stats := eng.Stats()
	if err := closeEngine(); err != nil {
		r.probe.fail(fmt.Errorf("close: %w", err))
	}
	if driveErr != nil && !errors.Is(driveErr, errStopped) {
		return nil, fmt.Errorf("loadgen: %s: %w", cfg.Scenario, driveErr)
	}
	if dir != "" {
		res.DiskBytes = dirSize(dir)
	}
	res.fill(r, stats, lost, end.Sub(start), before, after, smp.samples())
	if cfg.Ceiling > 0 {
		second, err := ceilingHalf()
		if err != nil {
			return nil, err
		}
		res.setCeiling(combineCeilings(first, second))
	}
	if cfg.Progress != nil {
		fmt.Fprint(cfg.Progress, "\r\033[K")
	}
	return res, nil
}

// dataDir returns the Badger directory of a durable run: dir when given
// (it must be new or empty: an old engine's accounts would join the run),
// else a temporary one removed afterwards.
func dataDir(dir string) (string, func(), error) {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "ratchetd-bench-")
		if err != nil {
			return "", nil, fmt.Errorf("loadgen: %w", err)
		}
		return tmp, func() { os.RemoveAll(tmp) }, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf("loadgen: %w", err)
	}
	if len(entries) > 0 {
		return "", nil, fmt.Errorf("loadgen: %s is not empty: a durable bench needs a new directory", dir)
	}
	return dir, func() {}, nil
}

// ceilingCores is how many loops the ceiling runs for senders conversations
// sending at once: one per conversation, at most one per CPU the process
// may use and at most GOMAXPROCS. Its loops are locked to their threads
// (measureCeiling), so more of them than CPUs would only take turns.
func ceilingCores(senders int) int {
	return max(1, min(runtime.GOMAXPROCS(0), runtime.NumCPU(), senders))
}
