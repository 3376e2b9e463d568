package actors

import (
	"fmt"
	"testing"

	"github.com/ratchetd/ratchetd/persistence"
)

// errStoreRec is a Badger store that remembers the errors of its commits
// and keeps its Batcher.
type errStoreRec struct {
	*persistence.Badger
	errs []error
}

func (s *errStoreRec) Commit(ws []persistence.Write) error {
	err := s.Badger.Commit(ws)
	s.errs = append(s.errs, err)
	return err
}

// Badger charges every entry 12 bytes more than its key and value (2 of
// meta, 10 of version) against its transaction limit (Txn.checkSize). Two
// writers whose requests each commit on their own, and that together come
// just under the limit by a count of keys and values only, must both
// succeed: grouped or not, no writer fails because another shared its
// batch. (Found by review: the committer used to group them into a batch
// Badger refused.)
func TestReviewCommitterBatchUnderestimatesBadgerSize(t *testing.T) {
	db, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: t.TempDir(), NoSync: true, CompactInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := &errStoreRec{Badger: db}
	cfg := Config{}.withDefaults()
	d := &deps{cfg: cfg, store: store, log: cfg.Logger, stats: &stats{}}
	c := &committer{deps: d}

	// The store's own limit, as its Fits reports it.
	lo, hi := int64(1), int64(1<<32)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if db.Fits(1, mid) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	limit := lo + 1
	// Two writers (say two decrypts that stored skipped keys), each well
	// within the limit, together just under it by the committer's count.
	var a, b pendingCommit
	for i := 0; a.size+b.size < limit-1_000; i++ {
		w := persistence.Write{Key: []byte(fmt.Sprintf("k-%06d", i)), Value: make([]byte, 1_000)}
		p := &a
		if i%2 == 1 {
			p = &b
		}
		p.writes = append(p.writes, w)
		p.size += int64(len(w.Key) + len(w.Value))
	}
	for _, p := range []pendingCommit{a, b} {
		if err := store.Commit(p.writes); err != nil {
			t.Fatalf("setup: one writer alone does not fit: %v", err)
		}
	}
	store.errs = nil
	c.pending = []pendingCommit{a, b}
	c.flush(nil)
	// Each writer's last attempt (grouped, or alone after a refused group)
	// succeeded.
	if n := len(store.errs); n < 1 || store.errs[n-1] != nil || (n > 1 && store.errs[n-2] != nil && n != 3) {
		t.Fatalf("commits: %v (%d writes, %d bytes by the committer's count)", store.errs, len(a.writes)+len(b.writes), a.size+b.size)
	}
	if n := len(store.errs); n == 3 && (store.errs[1] != nil || store.errs[2] != nil) {
		t.Fatalf("a writer failed after the group was split: %v", store.errs)
	}
}
