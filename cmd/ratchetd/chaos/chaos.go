// Package chaos is ratchetd's crash harness (`ratchetd chaos`): it runs a
// two-sided conversation against a data directory in a child process, kills
// the child with SIGKILL at random moments, restarts it, and after all runs
// verifies from both sides that no accepted message was lost, no message key
// was used twice, and nothing was left undecryptable.
//
// The child logs its events to an append-only file, each line synced before
// the action it describes is taken further:
//
//	S side n      about to send message n of side (n is never reused)
//	A side n      Send returned: the engine accepted it (outbox durable)
//	D side n id   the peer's application received it (before its Ack)
//	F count x     the engine counted that many more decrypt failures
//
// Envelopes travel through a durable spool in the same store, so a message
// the transport accepted survives the kill as it would in a real network.
package chaos

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// Options of a chaos run.
type Options struct {
	Dir  string
	Runs int    // kills
	Seed uint64 // schedule of kill times and of the load
	// MinRun and MaxRun bound how long a child runs before it is killed.
	MinRun, MaxRun time.Duration
	// Drain is how long the final, unkilled run waits for the spool and the
	// outboxes to empty.
	Drain time.Duration
	// Child starts a child process with these arguments (the command's own
	// hidden chaos-child subcommand, or a test binary).
	Child func(args ...string) *exec.Cmd
	// Log receives progress lines (nil: quiet).
	Log func(format string, args ...any)
}

// Result is what `--json` prints.
type Result struct {
	Runs          int `json:"runs"`
	Kills         int `json:"kills"`
	Sent          int `json:"sent"`
	Delivered     int `json:"delivered"`
	Lost          int `json:"lost"`
	KeyReuse      int `json:"key_reuse"`
	Undecryptable int `json:"undecryptable"`
	Duplicates    int `json:"duplicates_redelivered"`
	Envelopes     int `json:"envelopes"`
}

// OK reports whether every invariant held.
func (r Result) OK() bool { return r.Lost == 0 && r.KeyReuse == 0 && r.Undecryptable == 0 }

const eventsFile = "events.log"

// Run runs the harness.
func Run(o Options) (Result, error) {
	if o.MinRun <= 0 {
		o.MinRun = 50 * time.Millisecond
	}
	if o.MaxRun <= o.MinRun {
		o.MaxRun = o.MinRun + 400*time.Millisecond
	}
	if o.Drain <= 0 {
		o.Drain = 3 * time.Second
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return Result{}, err
	}
	res := Result{Runs: o.Runs}
	// Both accounts are created, and know each other's bundle, before the
	// first kill.
	init := o.Child("--dir", o.Dir, "--init")
	if out, err := init.CombinedOutput(); err != nil {
		return res, fmt.Errorf("chaos: init: %v: %s", err, out)
	}
	r := rand.New(rand.NewPCG(o.Seed, 0xc4a05))
	for i := range o.Runs {
		cmd := o.Child("--dir", o.Dir, "--seed", strconv.FormatUint(o.Seed+uint64(i)+1, 10))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return res, err
		}
		wait := o.MinRun + time.Duration(r.Int64N(int64(o.MaxRun-o.MinRun)))
		time.Sleep(wait)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		// Only a child that was still running, and died of the SIGKILL,
		// counts: one that failed on its own (a panic, a store it could
		// not reopen) is an error of the harness's subject.
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return res, fmt.Errorf("chaos: run %d: child: %v", i+1, err)
		}
		ws, ok := exit.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			return res, fmt.Errorf("chaos: run %d: the child ended by itself before its kill: %v", i+1, err)
		}
		res.Kills++
		logf("run %d: killed after %v", i+1, wait.Round(time.Millisecond))
	}
	// The final run sends nothing new: it restarts, drains the spool and
	// the outboxes, and exits cleanly.
	cmd := o.Child("--dir", o.Dir, "--drain", o.Drain.String())
	cmd.Stderr = os.Stderr
	if out, err := cmd.Output(); err != nil {
		return res, fmt.Errorf("chaos: final run: %v: %s", err, out)
	}
	return verify(o.Dir, res)
}

// verify reads the event log and the spool: every accepted message must be
// delivered; no (ratchet key, n) may carry two different ciphertexts.
func verify(dir string, res Result) (Result, error) {
	f, err := os.Open(filepath.Join(dir, eventsFile))
	if err != nil {
		return res, err
	}
	defer f.Close()
	accepted := map[string]bool{}
	delivered := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue // a line cut by the kill
		}
		id := fields[1] + " " + fields[2]
		switch fields[0] {
		case "A":
			accepted[id] = true
		case "D":
			delivered[id]++
		case "F":
			if n, err := strconv.Atoi(fields[1]); err == nil {
				res.Undecryptable += n
			}
		}
	}
	for id := range accepted {
		res.Sent++
		if delivered[id] == 0 {
			res.Lost++
		}
	}
	for _, n := range delivered {
		res.Delivered++
		res.Duplicates += n - 1
	}
	store, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: filepath.Join(dir, "data")})
	if err != nil {
		return res, err
	}
	defer store.Close()
	type use struct {
		key keys.PublicKey
		n   uint32
	}
	seen := map[use][]byte{}
	err = envelopes(store, func(env *messages.Envelope) {
		res.Envelopes++
		var pm messages.ProtocolMessage
		if proto.Unmarshal(env.Payload, &pm) != nil {
			return
		}
		for _, e := range pm.EncryptedMessage {
			h := e.GetDrHeader()
			if h == nil || len(h.Key) != keys.PublicKeySize {
				continue
			}
			u := use{keys.PublicKey(h.Key), h.N}
			if prev, ok := seen[u]; ok && !bytes.Equal(prev, e.Payload) {
				res.KeyReuse++
			}
			seen[u] = e.Payload
		}
	})
	if err != nil {
		return res, err
	}
	return res, nil
}

// appendEvent writes one event line and syncs it.
func appendEvent(f *os.File, format string, args ...any) error {
	if _, err := fmt.Fprintf(f, format+"\n", args...); err != nil {
		return err
	}
	return f.Sync()
}
