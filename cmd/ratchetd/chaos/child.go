package chaos

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/persistence"
)

const accountsFile = "accounts.json"

// Child is the child process: `chaos-child --dir D [--seed S | --drain T]`.
// It hosts both sides of the conversation in one engine on D/data.
func Child(args []string) error {
	fs := flag.NewFlagSet("chaos-child", flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory")
	seed := fs.Uint64("seed", 1, "load seed")
	drain := fs.Duration("drain", 0, "send nothing; wait this long for the spool to drain, then exit")
	initOnly := fs.Bool("init", false, "create the two accounts and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	store, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: filepath.Join(*dir, "data")})
	if err != nil {
		return err
	}
	defer store.Close()
	sp, err := newSpool(store)
	if err != nil {
		return err
	}
	events, err := os.OpenFile(filepath.Join(*dir, eventsFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer events.Close()
	next, err := nextNumbers(filepath.Join(*dir, eventsFile))
	if err != nil {
		return err
	}

	// The handler can run as soon as Open starts the installations
	// (redelivered inbox records): it waits for the engine.
	var engPtr atomic.Pointer[ratchetd.Engine]
	ready := make(chan struct{})
	var mu sync.Mutex
	var handlerErr error
	eng, err := ratchetd.Open(ratchetd.Options{
		Store: store, Transport: sp, ManualAck: true, RequestTimeout: 3 * time.Second,
		Handler: func(m ratchetd.Message) {
			// Log first, then acknowledge: a kill in between redelivers it.
			fields := strings.Fields(string(m.Payload))
			if len(fields) == 2 {
				mu.Lock()
				if err := appendEvent(events, "D %s %s %s", fields[0], fields[1], hex.EncodeToString(m.ID)); err != nil {
					handlerErr = err
				}
				mu.Unlock()
			}
			<-ready
			engPtr.Load().Ack(m)
		},
	})
	if err != nil {
		return err
	}
	engPtr.Store(eng)
	close(ready)
	defer func() {
		eng.Close()
		sp.Close()
	}()
	sides, err := accounts(eng, *dir)
	if err != nil {
		return err
	}
	if *initOnly {
		return nil
	}
	if *drain > 0 {
		deadline := time.Now().Add(*drain)
		for time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			if sp.pending() == 0 && time.Since(deadline.Add(-*drain)) > time.Second {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
		if f := eng.Stats().DecryptFailures; f > 0 {
			appendEvent(events, "F %d x", f)
		}
		return nil
	}
	var failures int64
	// The load: each side sends numbered messages to the other, forever
	// (until killed), in bursts and alternations.
	r := rand.New(rand.NewPCG(*seed, 7))
	names := []string{"alice", "bob"}
	for {
		i := r.IntN(2)
		from, to := sides[i], sides[1-i]
		n := next[names[i]]
		next[names[i]]++
		mu.Lock()
		err := appendEvent(events, "S %s %d", names[i], n)
		mu.Unlock()
		if err != nil {
			return err
		}
		if _, err := from.Send(to.Identity(), []byte(fmt.Sprintf("%s %d", names[i], n))); err != nil {
			continue // not accepted: may or may not arrive
		}
		mu.Lock()
		err = appendEvent(events, "A %s %d", names[i], n)
		herr := handlerErr
		mu.Unlock()
		if err != nil || herr != nil {
			return errors.Join(err, herr)
		}
		// Decrypt failures are logged as they are counted.
		if f := eng.Stats().DecryptFailures; f > failures {
			mu.Lock()
			err = appendEvent(events, "F %d x", f-failures)
			mu.Unlock()
			failures = f
			if err != nil {
				return err
			}
		}
		if r.IntN(8) == 0 {
			time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
		}
	}
}

// accounts loads Alice and Bob, or creates them (and their first exchange
// of bundles) on the first run.
func accounts(eng *ratchetd.Engine, dir string) ([2]*ratchetd.Account, error) {
	var ids [2]string
	path := filepath.Join(dir, accountsFile)
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &ids) == nil && ids[0] != "" {
		a, err1 := eng.Account(ids[0])
		b, err2 := eng.Account(ids[1])
		if err := errors.Join(err1, err2); err != nil {
			return [2]*ratchetd.Account{}, err
		}
		return [2]*ratchetd.Account{a, b}, nil
	}
	a, err := eng.CreateAccount()
	if err != nil {
		return [2]*ratchetd.Account{}, err
	}
	b, err := eng.CreateAccount()
	if err != nil {
		return [2]*ratchetd.Account{}, err
	}
	for _, p := range [][2]*ratchetd.Account{{a, b}, {b, a}} {
		s, err := p[1].ExportBundle()
		if err != nil {
			return [2]*ratchetd.Account{}, err
		}
		if err := p[0].ImportBundle(s); err != nil {
			return [2]*ratchetd.Account{}, err
		}
	}
	ids = [2]string{a.InstallationID(), b.InstallationID()}
	raw, _ := json.Marshal(ids)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return [2]*ratchetd.Account{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return [2]*ratchetd.Account{}, err
	}
	return [2]*ratchetd.Account{a, b}, nil
}

// nextNumbers returns, per side, one more than the largest number ever
// announced (S), so that a number is never used for two messages.
func nextNumbers(path string) (map[string]int, error) {
	next := map[string]int{"alice": 0, "bob": 0}
	f, err := os.Open(path)
	if err != nil {
		return next, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[0] == "S" {
			if n, err := strconv.Atoi(fields[2]); err == nil && n+1 > next[fields[1]] {
				next[fields[1]] = n + 1
			}
		}
	}
	return next, nil
}
