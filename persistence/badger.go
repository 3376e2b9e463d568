package persistence

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
type Badger struct {
	db   *badger.DB
	stop chan struct{}
	done chan struct{}
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
	db, err := badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("persistence: open %s: %w", dir, err)
	}
	b := &Badger{db: db, stop: make(chan struct{}), done: make(chan struct{})}
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
	txn := b.db.NewTransaction(true)
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
	err := txn.Commit()
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
