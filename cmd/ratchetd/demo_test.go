package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ratchetd/ratchetd"
)

// The demo delivers everything it addressed, restarts once, and reports
// its summary as one JSON object on standard output (the transcript goes to
// standard error). Run twice with one seed, it prints the same transcript.
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	code, out, transcript := runCmd(t, "", "demo", "--json", "--dir", dir, "--seed", "3")
	if code != 0 {
		t.Fatalf("status %d\n%s", code, transcript)
	}
	var s demoSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	if s.Identities != 3 || s.Installations != 6 || s.Sessions < 10 || s.Restarts != 1 {
		t.Errorf("summary %+v", s)
	}
	if s.Expected == 0 || s.Delivered != s.Expected || s.DecryptFailures != 0 || s.Sent < 25 || s.LostInTransit != 2 {
		t.Errorf("summary %+v", s)
	}
	for _, want := range []string{"X3DH against prekey", "the network lost", "out of order", "a new one opens on", "version 1 to 2", "answered with its bundle", "bob/desktop   ← #"} {
		if !strings.Contains(transcript, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	// A second run starts clean on the same directory and tells the same
	// story.
	code, out2, transcript2 := runCmd(t, "", "demo", "--json", "--dir", dir, "--seed", "3")
	if code != 0 || out2 != out {
		t.Fatalf("second run: status %d, summary %s, want %s", code, out2, out)
	}
	first, _ := strings.CutPrefix(transcript, strings.SplitN(transcript, "\n", 2)[0])
	second, _ := strings.CutPrefix(transcript2, strings.SplitN(transcript2, "\n", 2)[0])
	if first != second {
		t.Errorf("the transcripts of two runs with one seed differ")
	}
}

// A directory in use by another engine is refused with ErrLocked; a
// non-empty directory the demo did not create is never emptied.
func TestDemoDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := markDemoDir(dir); err != nil {
		t.Fatal(err)
	}
	eng, err := ratchetd.Open(ratchetd.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = runDemo(os.Stderr, dir, 1, nil)
	eng.Close()
	if !errors.Is(err, ratchetd.ErrLocked) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("demo on a locked directory: %v", err)
	}

	foreign := t.TempDir()
	precious := filepath.Join(foreign, "accounts.db")
	os.WriteFile(precious, []byte("someone's data"), 0o600)
	code, _, errOut := runCmd(t, "", "demo", "--dir", foreign)
	if code == 0 || !strings.Contains(errOut, "did not create") {
		t.Fatalf("demo on a foreign directory: status %d, %s", code, errOut)
	}
	if _, err := os.Stat(precious); err != nil {
		t.Fatalf("the foreign directory was touched: %v", err)
	}
}
