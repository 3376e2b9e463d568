package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/persistence"
)

// demoMarker is the file that says a data directory belongs to the demo.
// The demo starts clean every time — its summary and its transcript are
// those of one run, and its seeded keys would collide with a previous
// run's — so it empties the directory first; the marker makes sure it only
// ever empties a directory it created, never real accounts (`ratchetd
// bundle` uses the same default directory).
const demoMarker = ".ratchetd-demo"

// prepareDemoDir makes dir a clean demo directory. A new or empty
// directory is marked; a marked one is emptied; any other is refused. The
// store is emptied while Badger's directory lock is held, so a second demo
// running on the same directory fails with ErrLocked instead of wiping the
// first one's state under it.
func prepareDemoDir(dir string) (reused bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("demo: %w", err)
		}
		return false, markDemoDir(dir)
	case err != nil:
		return false, fmt.Errorf("demo: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, demoMarker)); err != nil {
		return false, fmt.Errorf("demo: %s holds data the demo did not create; give --dir a new directory (the demo empties its directory on every run)", dir)
	}
	db, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: dir})
	if err != nil {
		return false, openError(dir, err)
	}
	if err := emptyStore(db); err != nil {
		db.Close()
		return false, fmt.Errorf("demo: empty %s: %w", dir, err)
	}
	if err := db.Close(); err != nil {
		return false, fmt.Errorf("demo: %w", err)
	}
	return true, nil
}

func markDemoDir(dir string) error {
	note := []byte("This directory holds the state of `ratchetd demo`, which empties it on every run.\n")
	if err := os.WriteFile(filepath.Join(dir, demoMarker), note, 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

// emptyStore deletes every key, in transactions the store accepts.
func emptyStore(db *persistence.Badger) error {
	var keys [][]byte
	if err := db.Scan(nil, func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		for n > 1 && !db.Fits(n, int64(n*64)) {
			n /= 2
		}
		ws := make([]persistence.Write, n)
		for i := range ws {
			ws[i] = persistence.Write{Key: keys[i], Delete: true}
		}
		if err := db.Commit(ws); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

// openError explains the one open failure a person can act on: another
// process has the directory.
func openError(dir string, err error) error {
	if errors.Is(err, ratchetd.ErrLocked) {
		return fmt.Errorf("demo: %s is in use by another ratchetd (is another demo running on it?): %w", dir, err)
	}
	return fmt.Errorf("demo: open %s: %w", dir, err)
}
