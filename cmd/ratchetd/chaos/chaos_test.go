package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// The test binary doubles as the child process.
func TestMain(m *testing.M) {
	if os.Getenv("RATCHETD_CHAOS_CHILD") == "1" {
		if err := Child(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "chaos child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestChaos kills a two-sided conversation with SIGKILL a few times (or
// RATCHETD_CHAOS_RUNS times: make crash runs 200) and checks the invariants.
func TestChaos(t *testing.T) {
	runs := 4
	if v, err := strconv.Atoi(os.Getenv("RATCHETD_CHAOS_RUNS")); err == nil && v > 0 {
		runs = v
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(Options{
		Dir:    t.TempDir(),
		Runs:   runs,
		Seed:   1,
		MinRun: 300 * time.Millisecond,
		MaxRun: 900 * time.Millisecond,
		Drain:  3 * time.Second,
		Child: func(args ...string) *exec.Cmd {
			c := exec.Command(exe, args...)
			c.Env = append(os.Environ(), "RATCHETD_CHAOS_CHILD=1")
			return c
		},
		Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	out, _ := json.Marshal(res)
	t.Logf("chaos: %s", out)
	if res.Kills != runs || res.Sent == 0 || res.Delivered == 0 {
		t.Fatalf("the harness did not exercise anything: %+v", res)
	}
	if !res.OK() {
		t.Fatalf("invariants broken: %+v", res)
	}
}
