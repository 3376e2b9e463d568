package ratchetd_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// rpNthScan fails the nth scan (1-based) of one installation's outbox
// (prefix), once: a store I/O error.
type rpNthScan struct {
	persistence.Store
	mu     sync.Mutex
	prefix []byte
	n, at  int
}

func (s *rpNthScan) Scan(prefix []byte, fn func(k, v []byte) error) error {
	if s.prefix != nil && bytes.Equal(prefix, s.prefix) {
		s.mu.Lock()
		s.n++
		hit := s.n == s.at
		s.mu.Unlock()
		if hit {
			return errors.New("injected outbox scan failure")
		}
	}
	return s.Store.Scan(prefix, fn)
}

func newCtlConfirm() *ctlConfirm {
	return &ctlConfirm{Memory: transport.NewMemory(transport.MemoryOptions{}), mode: map[string]string{}, pubs: map[string]int{}}
}

// TestReviewProbeScanErrorDropsBacklog: an outbox scan that fails clears
// the backlog mark (scanLanes, default case) and leaves the rest "to the
// timed pass". But the timed pass is now probeOnly as soon as no lane is
// marked: with backlog false, strayFailed false and no lane in memory it
// reads nothing, schedules nothing, and the records are never published
// (before the change the timed pass scanned the whole outbox). Here: an
// engine restarts with 5 sends to bob in its outbox; the first pass's scan
// fails once; bob is up, yet nothing is ever published to him.
func TestReviewProbeScanErrorDropsBacklog(t *testing.T) {
	const n = 5
	store := persistence.NewMemory()
	tr := newCtlConfirm()
	defer tr.Close()
	var in byRecipient
	opts := ratchetd.Options{Transport: tr, OutboxRetryInterval: 20 * time.Millisecond, Handler: in.handle}
	o := opts
	o.Store = store
	eng, err := ratchetd.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := eng.CreateAccount()
	bob, _ := eng.CreateAccount()
	introduce(t, alice, bob)
	introduce(t, bob, alice)
	tr.set(bob.Identity(), "down")
	for i := range n {
		if _, err := alice.Send(bob.Identity(), fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for tr.fails.Load() < n {
		time.Sleep(time.Millisecond)
	}
	eng.Close()
	if out, _ := storeOutbox(store); out != n {
		t.Fatalf("outbox holds %d records before the restart, want %d", out, n)
	}

	tr.set(bob.Identity(), "")
	// Scan 1 of alice's outbox is restoreOutboxSeq's (keys only); scan 2
	// is the first pass's.
	st := &rpNthScan{Store: store, prefix: persistence.OutboxPrefix(alice.InstallationID()), at: 2}
	o = opts
	o.Store = st
	eng, err = ratchetd.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	// About 75 retry intervals: 5 sweeps' worth, had the passes gone on.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for in.count(bob.Identity()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if k := in.count(bob.Identity()); k != n {
		out, _, _ := eng.Pending()
		st.mu.Lock()
		scans := st.n
		st.mu.Unlock()
		t.Fatalf("bob (up) received %d of %d after the restart; alice's outbox holds %d, %d scans of it", k, n, out, scans)
	}
}

// storeOutbox counts the outbox records of every installation.
func storeOutbox(s persistence.Store) (int, error) {
	n := 0
	err := s.Scan(persistence.AllOutboxPrefix(), func(_, _ []byte) error { n++; return nil })
	return n, err
}
