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

// The Committer asks the store whether a batch Fits with the sum of key and
// value lengths, but Badger charges every entry 12 bytes more (2 of meta, 10
// of version) against the same limit (Txn.checkSize). Two writers whose
// requests each commit on their own are grouped into one batch that Badger
// refuses with ErrTxnTooBig, and both fail: an innocent session's decrypt
// is dropped because another one shared its batch.
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
	if !c.fits(len(a.writes)+len(b.writes), a.size+b.size) {
		t.Fatalf("setup: the committer does not group them (%d writes, %d bytes)", len(a.writes)+len(b.writes), a.size+b.size)
	}
	c.pending = []pendingCommit{a, b}
	c.flush(nil)
	for i, err := range store.errs {
		if err != nil {
			t.Fatalf("batch %d of %d (%d writes, %d bytes by the committer's count) refused: %v", i+1, len(store.errs), len(a.writes)+len(b.writes), a.size+b.size, err)
		}
	}
}
