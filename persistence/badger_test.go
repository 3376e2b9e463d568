package persistence_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ratchetd/ratchetd/persistence"
)

func TestBadgerRoundTripAndRestart(t *testing.T) {
	dir := t.TempDir()
	db, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := persistence.SessionKey("i", []byte{2, 1}, "p", []byte{3}), persistence.SessionKey("i", []byte{2, 1}, "q", []byte{3})
	if err := db.Commit([]persistence.Write{{Key: k1, Value: []byte("one")}, {Key: k2, Value: []byte("two")}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit([]persistence.Write{{Key: k2, Delete: true}}); err != nil {
		t.Fatal(err)
	}
	// A second open of the same directory is refused.
	if _, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: dir}); !errors.Is(err, persistence.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	db.Close()
	db, err = persistence.OpenBadger(persistence.BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, err := db.Get(k1); err != nil || string(v) != "one" {
		t.Fatalf("after reopen: %q %v", v, err)
	}
	if _, err := db.Get(k2); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	n := 0
	db.Scan(persistence.SessionPrefix("i", []byte{2, 1}), func(k, v []byte) error { n++; return nil })
	if n != 1 {
		t.Fatalf("scan found %d", n)
	}
}

// TestBadgerSecretsNotOnDisk: values are encrypted at rest, and a deleted
// secret is gone from the files after compaction even to someone holding
// the store key... which the files themselves never show in clear.
func TestBadgerSecretsNotOnDisk(t *testing.T) {
	dir := t.TempDir()
	db, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte("SECRET-CHAIN-KEY"), 4)
	k := persistence.SkippedKey(persistence.SessionKey("i", []byte{2}, "p", []byte{3}), 7)
	if err := db.Commit([]persistence.Write{{Key: k, Value: secret}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit([]persistence.Write{{Key: k, Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, secret[:16]) {
			t.Errorf("%s contains the secret in clear", p)
		}
		return nil
	})
}

// TestMemoryOrderedScan: the in-memory store scans a prefix in key order and
// sees puts and deletes.
func TestMemoryOrderedScan(t *testing.T) {
	m := persistence.NewMemory()
	m.Commit([]persistence.Write{{Key: []byte("b2"), Value: []byte("x")}, {Key: []byte("a1"), Value: []byte("x")}, {Key: []byte("b1"), Value: []byte("x")}, {Key: []byte("c"), Value: []byte("x")}})
	m.Commit([]persistence.Write{{Key: []byte("b3"), Value: []byte("x")}, {Key: []byte("b2"), Delete: true}, {Key: []byte("zz"), Delete: true}})
	var got []string
	m.Scan([]byte("b"), func(k, _ []byte) error { got = append(got, string(k)); return nil })
	if len(got) != 2 || got[0] != "b1" || got[1] != "b3" || m.Len() != 4 {
		t.Fatalf("scan %q, len %d", got, m.Len())
	}
}

// TestMemoryMatchesModel: random puts, deletes and prefix scans on the
// in-memory store agree with a plain map, sorted at each scan.
func TestMemoryMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := persistence.NewMemory()
	model := map[string]string{}
	key := func() string { return fmt.Sprintf("%c%02d", 'a'+rune(rng.IntN(3)), rng.IntN(40)) }
	for step := range 5000 {
		var ws []persistence.Write
		for range 1 + rng.IntN(4) {
			k := key()
			if rng.IntN(3) == 0 {
				ws = append(ws, persistence.Write{Key: []byte(k), Delete: true})
				delete(model, k)
			} else {
				v := fmt.Sprint(step)
				ws = append(ws, persistence.Write{Key: []byte(k), Value: []byte(v)})
				model[k] = v
			}
		}
		if err := m.Commit(ws); err != nil {
			t.Fatal(err)
		}
		prefix := key()[:1+rng.IntN(2)]
		var got, want []string
		m.Scan([]byte(prefix), func(k, v []byte) error { got = append(got, string(k)+"="+string(v)); return nil })
		for k, v := range model {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k+"="+v)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("step %d, scan %q: got %v, want %v", step, prefix, got, want)
		}
		if m.Len() != len(model) {
			t.Fatalf("step %d: %d records, want %d", step, m.Len(), len(model))
		}
	}
}
