package persistence

import (
	"fmt"
	"math"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// versions counts the versions Badger still holds of key (deletion
// markers included).
func versions(t *testing.T, b *Badger, key []byte) int {
	t.Helper()
	txn := b.db.NewTransactionAt(math.MaxUint64, false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{AllVersions: true, Prefix: key})
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		if string(it.Item().Key()) == string(key) {
			n++
		}
	}
	return n
}

// In managed mode the store moves Badger's discard mark with every commit:
// Compact then drops every overwritten version and every deleted key, so
// old chain keys and used message keys leave the files. (Without the mark a
// managed Badger keeps every version for ever.)
func TestManagedCompactDropsOldVersions(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(BadgerOptions{Dir: dir, CompactInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	kept, gone := []byte("s-kept"), []byte("k-gone")
	for _, w := range [][]Write{
		{{Key: kept, Value: []byte("v1")}, {Key: gone, Value: []byte("secret")}},
		{{Key: kept, Value: []byte("v2")}},
		{{Key: kept, Value: []byte("v3")}, {Key: gone, Delete: true}},
	} {
		if err := b.Commit(w); err != nil {
			t.Fatal(err)
		}
	}
	if n := versions(t, b, kept); n != 3 {
		t.Fatalf("before compaction: %d versions of the kept key, want 3", n)
	}
	// Close flushes the memtable to a table, which Compact can rewrite.
	b.Close()
	if b, err = OpenBadger(BadgerOptions{Dir: dir, CompactInterval: -1}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Compact(); err != nil {
		t.Fatal(err)
	}
	if n := versions(t, b, kept); n != 1 {
		t.Errorf("after compaction: %d versions of the overwritten key, want 1", n)
	}
	if n := versions(t, b, gone); n != 0 {
		t.Errorf("after compaction: %d versions of the deleted key, want 0", n)
	}
	if v, err := b.Get(kept); err != nil || string(v) != "v3" {
		t.Fatalf("kept key: %q %v", v, err)
	}
}

// A store written by Badger's default (unmanaged) mode, as by ratchetd
// before managed mode, opens: its values are read, and new commits
// continue above its versions, so they supersede the old values.
func TestManagedOpensUnmanagedStore(t *testing.T) {
	dir := t.TempDir()
	key, err := loadOrCreateKey(dir + "/" + KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	old, err := badger.Open(badger.DefaultOptions(dir).WithEncryptionKey(key).WithIndexCacheSize(1 << 20).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ { // versions 1..50 of one key, one of another
		if err := old.Update(func(txn *badger.Txn) error { return txn.Set([]byte("k"), []byte{byte(i)}) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Update(func(txn *badger.Txn) error { return txn.Set([]byte("other"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	old.Close()

	b, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := b.Get([]byte("k")); err != nil || len(v) != 1 || v[0] != 49 {
		t.Fatalf("old value: %v %v", v, err)
	}
	if err := b.Commit([]Write{{Key: []byte("k"), Value: []byte("new")}, {Key: []byte("other"), Delete: true}}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b, err = OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if v, err := b.Get([]byte("k")); err != nil || string(v) != "new" {
		t.Fatalf("after reopen: %q %v, want the managed commit", v, err)
	}
	if _, err := b.Get([]byte("other")); err != ErrNotFound {
		t.Fatalf("deleted key: %v", err)
	}
}

// Concurrent writers, each the only writer of its keys as in the engine:
// every writer reads back what it committed, and after a reopen the store
// holds each key's last value.
func TestManagedConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(BadgerOptions{Dir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	const writers, rounds = 8, 50
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			key := []byte{'w', byte(w)}
			for r := range rounds {
				val := []byte{byte(r)}
				if err := b.Commit([]Write{{Key: key, Value: val}, {Key: append(key, 'x'), Value: val}}); err != nil {
					errs <- err
					return
				}
				if got, err := b.Get(key); err != nil || got[0] != byte(r) {
					errs <- fmt.Errorf("writer %d round %d read back %v %v", w, r, got, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	if b, err = OpenBadger(BadgerOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for w := range writers {
		for _, k := range [][]byte{{'w', byte(w)}, {'w', byte(w), 'x'}} {
			if got, err := b.Get(k); err != nil || got[0] != rounds-1 {
				t.Fatalf("key %q after reopen: %v %v", k, got, err)
			}
		}
	}
}
