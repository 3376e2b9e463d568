// Package loadgen is ratchetd's load generator: scenarios that drive a real
// engine (actors, Badger or the in-memory store, the asynchronous in-memory
// transport) through the embedding API, measure delivered messages and
// send-to-receipt latency, the process's CPU, allocations and memory, and
// the same work done by a straight-line loop of the crypto primitives alone
// (the ceiling the engine is reported against).
package loadgen

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Scenario names.
const (
	Burst    = "burst"    // one side sends long runs, the other decrypts: symmetric ratchet
	PingPong = "pingpong" // strict alternation: a DH ratchet step per message
	X3DH     = "x3dh"     // a new session (a fresh account) per message
	Fanout   = "fanout"   // group sends to multi-device identities, with copies to our own devices
	Sessions = "sessions" // many conversations, a few active: memory per conversation
)

// Scenarios lists the scenario names in the order the help shows them.
var Scenarios = []string{Burst, PingPong, X3DH, Fanout, Sessions}

// DefaultSessions is the number of conversations a scenario runs when not
// told: enough concurrent work to keep two cores busy while commits wait
// for the disk. A pingpong conversation and an x3dh worker have one
// message in flight each (about two fsyncs of latency), so they need more
// of them than burst, whose conversations run DefaultSenders senders each.
// Durable pingpong with 64 conversations left a quarter of a core idle
// waiting on commits (1.58–1.75 cores busy); 128 keep 1.71–1.83 busy, at
// twice the latency (p50 about 22 ms instead of 11). A burst conversation
// is two serial ratchets (one sender's, one receiver's session), each
// waiting for its batch commits: durable burst with 8 conversations kept
// 1.63–1.69 cores busy, 16 keep 1.82–1.83 (p50 22 ms instead of 11–14).
// A fanout group has one sender, which waits for each group message's
// commits: durable fanout with 2 groups kept 1.27 cores busy (6.2 k
// deliveries/s), 8 keep 1.81 (10.7 k/s).
var DefaultSessions = map[string]int{Burst: 16, PingPong: 128, X3DH: 32, Fanout: 8, Sessions: 1000}

// DefaultSenders is how many goroutines send on each burst conversation:
// a run is pipelined, as by an application that does not wait for one
// Send before the next (each Send returns once its state and, with a
// confirming transport, its outbox record are durable), and the sends in
// flight share group commits. At most burstWindow are in flight.
const DefaultSenders = 8

// MinPayload is the smallest payload: the probe stamps a message id, the
// conversation and the send time into it.
const MinPayload = probeSize

// Config is one load-generator run.
type Config struct {
	Scenario string
	// Sessions is the number of conversations (pairs for burst and
	// pingpong, workers for x3dh, groups for fanout, conversations with one
	// hub for sessions); 0 takes DefaultSessions.
	Sessions int
	// Senders is the number of concurrent senders per burst conversation;
	// 0 takes DefaultSenders.
	Senders int
	// Duration and Messages bound the measured phase; the first reached
	// ends it. Messages counts deliveries.
	Duration time.Duration
	Messages int
	Payload  int
	// Durable keeps the state in Badger (Dir, or a temporary directory
	// removed afterwards); otherwise in the in-memory store.
	Durable bool
	// NoSync runs a durable bench with Badger's SyncWrites off: the state
	// survives a process crash (kill -9) but not a power loss. It measures
	// what the fsync of each group commit costs.
	NoSync bool
	// CommitDelay is the engine's Options.CommitDelay (0: its default,
	// negative: off).
	CommitDelay time.Duration
	Dir         string
	// Seed fixes the payload bytes and the choice of active conversations;
	// keys always come from crypto/rand.
	Seed uint64
	// Ceiling is how long the crypto-only loop runs, half before the
	// measured phase and half after it (0: not measured).
	Ceiling time.Duration
	// DrainTimeout bounds the wait for messages in flight at the end.
	DrainTimeout time.Duration
	// Progress, when set, receives a live status line (carriage returns).
	Progress io.Writer
	// Monitor, when set, exposes the run while it lasts (metrics).
	Monitor *Monitor
	Logger  *slog.Logger
	// Sample is the timeline interval (250 ms).
	Sample time.Duration
}

func (c *Config) normalize() error {
	c.Scenario = strings.ToLower(strings.TrimSpace(c.Scenario))
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("loadgen: unknown scenario %q (one of %s)", c.Scenario, strings.Join(Scenarios, ", "))
	}
	if c.Sessions <= 0 {
		c.Sessions = DefaultSessions[c.Scenario]
	}
	if c.Senders <= 0 {
		c.Senders = DefaultSenders
	}
	if c.Payload == 0 {
		c.Payload = 200
	}
	if c.Payload < MinPayload {
		return fmt.Errorf("loadgen: payload of %d bytes: at least %d are needed for the probe stamp", c.Payload, MinPayload)
	}
	if c.Duration <= 0 && c.Messages <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Messages < 0 {
		return fmt.Errorf("loadgen: negative message count")
	}
	if c.NoSync && !c.Durable {
		return fmt.Errorf("loadgen: no-sync applies to a durable run only")
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 15 * time.Second
	}
	if c.Sample <= 0 {
		c.Sample = 250 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
