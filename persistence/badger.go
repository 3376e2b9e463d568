package persistence

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// ErrLocked: the data directory is in use by another engine (Badger's
// directory lock).
var ErrLocked = errors.New("persistence: data directory is in use by another process")

// DefaultDir is where the embedded default keeps its data.
const DefaultDir = "ratchetd-data"

// DefaultMemTableSize bounds one memtable (Badger's default is 64 MiB): a
// transaction may hold 15 % of it, 1.2 MiB, twice the largest single
// commit (a decrypt that skips MaxSkip keys twice: about 550 KiB).
//
// It also bounds Badger's table builders, which keep their buffers in a
// pool of up to eight allocators, each grown to the largest table it built
// (a flush copies a whole memtable two or three times: raw, compressed,
// encrypted) and released only after seconds without a table being built:
// under a steady load. In the sessions benchmark (100 000 first contacts on
// a store of 900 000), with 16 MiB memtables and table sizes doubling per
// level it held 236 MiB of heap; with 8 MiB memtables and one table size
// on every level (TableSizeMultiplier 1), 150 MiB, and the phase took 2
// minutes instead of 3 in a 1 GiB memory cgroup.
const DefaultMemTableSize = 8 << 20

// ValueThreshold is the size above which a value goes to the value log.
const ValueThreshold = 64 << 10

// KeyFile is the name of the store key file created in the data directory
// when no key is given.
const KeyFile = "store.key"

// BadgerOptions configure the Badger store.
type BadgerOptions struct {
	// Dir is the data directory (DefaultDir when empty).
	Dir string
	// InMemory runs Badger without files (tests).
	InMemory bool
	// NoSync turns SyncWrites off: faster, and still safe against a process
	// crash (writes reach the page cache), but not against power loss.
	NoSync bool
	// EncryptionKey (32 bytes) encrypts every value and index at rest
	// (AES-256-CTR, Badger's encryption, with data keys rotated every 10
	// days). Nil reads or creates KeyFile in Dir; keep the key elsewhere
	// (EncryptionKey) for the encryption to protect a stolen directory.
	EncryptionKey []byte
	// MemTableSize bounds memory per memtable (DefaultMemTableSize when
	// zero).
	MemTableSize int64
	// CompactInterval runs Compact periodically so that deleted secrets
	// (used message keys, old chain keys) leave the files (1 h when zero;
	// negative: never).
	CompactInterval time.Duration
	Logger          *slog.Logger
}

// Badger is the durable Store: one Badger DB per process, SyncWrites on by
// default, values encrypted at rest.
//
// It runs Badger in managed mode: the store numbers its commits itself and
// reads the newest version of every key. In Badger's default mode every
// read transaction (each Get and Scan) first waits until its watermark
// goroutine has processed every commit before it, and every transaction
// signals that goroutine twice more; under load that goroutine waited for
// a core behind the engine's actors, the reads behind it, and an x3dh
// benchmark trace showed more time blocked in that wait than in any other.
// The store needs none of what the watermarks buy: a key has one writer,
// which waits for its commit before it writes or reads the key again, and
// no read needs a snapshot of several keys. What changes for a reader of
// another writer's keys: a commit's writes may be seen from the moment they
// are in the memtable, before its sync returns, and one by one (the
// registry's device records and the outbox, whose readers act on them only
// in ways a crash already allows: an envelope published twice, a device
// learnt again from its next bundle).
type Badger struct {
	db   *badger.DB
	stop chan struct{}
	done chan struct{}

	// commitMu orders commits: a commit's version (ts) is taken, and its
	// transaction queued to Badger's writer, under it, so versions follow
	// the order in which writes reach the tree.
	commitMu sync.Mutex
	ts       uint64 // the last commit's version

	discardMu sync.Mutex
	discard   uint64 // the version last given to SetDiscardTs
}

// OpenBadger opens (or creates) the store. A directory already open in
// another process — or twice in this one — is refused with ErrLocked.
func OpenBadger(o BadgerOptions) (*Badger, error) {
	dir := o.Dir
	if dir == "" {
		dir = DefaultDir
	}
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(!o.NoSync).
		WithLogger(badgerLogger{o.Logger}).
		WithNumVersionsToKeep(1).
		// Every write goes through one Committer and a key has one writer
		// (its actor): Badger's read-write conflict tracking would only
		// cost time on every commit.
		WithDetectConflicts(false).
		WithCompactL0OnClose(true).
		WithNumCompactors(2).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(16 << 20)
	mt := o.MemTableSize
	if mt <= 0 {
		mt = DefaultMemTableSize
	}
	// One Commit must fit one Badger transaction (15 % of a memtable), and
	// a decrypt that skips MaxSkip keys twice with a large plaintext writes
	// thousands of records at once. Values above ValueThreshold (inbox
	// plaintexts, not keys) go to the value log, where they count for a
	// pointer only.
	opts = opts.WithMemTableSize(mt).WithNumMemtables(2).WithValueLogFileSize(64 << 20).WithValueThreshold(ValueThreshold)
	opts.TableSizeMultiplier = 1 // see DefaultMemTableSize
	if o.InMemory {
		// Without files there is no value log: every value stays in the
		// tree, and ValueThreshold becomes the largest value allowed.
		opts = opts.WithInMemory(true).WithDir("").WithValueDir("").WithValueThreshold(1 << 20)
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	key := o.EncryptionKey
	if key == nil && !o.InMemory {
		var err error
		if key, err = loadOrCreateKey(filepath.Join(dir, KeyFile)); err != nil {
			return nil, err
		}
	}
	if key != nil {
		if len(key) != 32 {
			return nil, fmt.Errorf("persistence: encryption key is %d bytes, want 32", len(key))
		}
		opts = opts.WithEncryptionKey(key)
	}
	db, err := badger.OpenManaged(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("persistence: open %s: %w", dir, err)
	}
	// Versions continue above the store's newest, whichever mode wrote it.
	b := &Badger{db: db, stop: make(chan struct{}), done: make(chan struct{}), ts: db.MaxVersion()}
	db.SetDiscardTs(b.ts)
	b.discard = b.ts
	every := o.CompactInterval
	if every == 0 {
		every = time.Hour
	}
	go b.maintain(every)
	return b, nil
}

func (b *Badger) maintain(every time.Duration) {
	defer close(b.done)
	if every < 0 {
		<-b.stop
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.Compact()
		}
	}
}

func loadOrCreateKey(path string) ([]byte, error) {
	k, err := os.ReadFile(path)
	if err == nil {
		if len(k) != 32 {
			return nil, fmt.Errorf("persistence: %s holds %d bytes, want 32", path, len(k))
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k = make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, k, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

func (b *Badger) Get(k []byte) ([]byte, error) {
	var v []byte
	err := b.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, ErrNotFound
	case errors.Is(err, badger.ErrDBClosed):
		return nil, ErrClosed
	}
	return v, err
}

func (b *Badger) Scan(prefix []byte, fn func(k, v []byte) error) error {
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			err := item.Value(func(v []byte) error { return fn(item.Key(), v) })
			if err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrClosed
	}
	return err
}

// Commit applies the writes in one transaction; with SyncWrites it returns
// once they are on disk. A batch too big for one transaction is an error:
// the Committer splits between writers, never inside one writer's writes.
func (b *Badger) Commit(ws []Write) error {
	if len(ws) == 0 {
		return nil
	}
	txn := b.db.NewTransactionAt(math.MaxUint64, true)
	defer txn.Discard()
	for _, w := range ws {
		var err error
		if w.Delete {
			err = txn.Delete(w.Key)
		} else {
			err = txn.Set(w.Key, w.Value)
		}
		if err != nil {
			if errors.Is(err, badger.ErrDBClosed) {
				return ErrClosed
			}
			return err
		}
	}
	done := make(chan error, 1)
	b.commitMu.Lock()
	b.ts++
	ts := b.ts
	// CommitAt with a callback queues the transaction before it returns
	// and reports the write (and its sync) to the callback.
	_ = txn.CommitAt(ts, func(err error) { done <- err })
	b.commitMu.Unlock()
	err := <-done
	if err == nil {
		// Reads are always of the newest version (View reads at the
		// maximum version in managed mode): every older version, and
		// every deletion, may be dropped by compaction — so deleted
		// secrets leave the files (Compact). Commits may return out of
		// order: the mark only moves forward.
		b.discardMu.Lock()
		if ts > b.discard {
			b.discard = ts
			b.db.SetDiscardTs(ts)
		}
		b.discardMu.Unlock()
	}
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrClosed
	}
	return err
}

// Fits reports whether n writes of size bytes (keys and values) fit in one
// transaction. Badger charges each entry about 12 bytes more than its key and
// value (Txn.checkSize), and refuses a transaction beyond 15 % of a memtable;
// a tenth of margin stays unused.
func (b *Badger) Fits(n int, size int64) bool {
	o := b.db.Opts()
	maxSize := o.MemTableSize * 15 / 100 * 9 / 10
	return size+int64(n)*24 < maxSize && int64(n) < maxSize/100
}

// Compact drops deleted and overwritten versions from the files (value-log
// GC and a flatten of the LSM tree), so that deleted secrets are gone from
// disk, not just hidden.
func (b *Badger) Compact() error {
	if err := b.db.Flatten(2); err != nil {
		return err
	}
	for {
		if err := b.db.RunValueLogGC(0.01); err != nil {
			break
		}
	}
	return nil
}

// Close stops the maintenance and closes the database.
func (b *Badger) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
	return b.db.Close()
}

// badgerLogger routes Badger's log lines to slog at debug level (warnings
// and errors at their level).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) log(level slog.Level, f string, args ...any) {
	// Badger logs on its write path (every commit): format nothing that
	// would be dropped.
	if b.l != nil && b.l.Enabled(context.Background(), level) {
		b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(f, args...)), "lib", "badger")
	}
}
func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a...) }
