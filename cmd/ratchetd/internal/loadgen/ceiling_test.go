package loadgen

import (
	"runtime"
	"testing"
	"time"
)

// Each scenario's crypto-only loop runs without error: a ceiling loop that
// failed part-way would report a rate for less work than the engine does.
func TestCeilingPrimitives(t *testing.T) {
	for _, p := range []primitive{symmetric, alternating, newSession} {
		t.Run(p.String(), func(t *testing.T) {
			n, err := loop(p, make([]byte, 200), 0)
			if err != nil {
				t.Fatal(err)
			}
			if n < 8 {
				t.Fatalf("%d iterations, want at least 8", n)
			}
		})
	}
}

// The ceiling runs one loop per sending conversation, never more than the
// CPUs the process may use (its loops hold their threads) nor GOMAXPROCS,
// and at least one.
func TestCeilingCores(t *testing.T) {
	limit := min(runtime.GOMAXPROCS(0), runtime.NumCPU())
	for _, c := range []struct{ senders, want int }{
		{0, 1}, {1, 1}, {limit, limit}, {limit + 1, limit}, {1 << 20, limit},
	} {
		if got := ceilingCores(c.senders); got != c.want {
			t.Errorf("ceilingCores(%d) = %d, want %d", c.senders, got, c.want)
		}
	}
}

// measureCeiling runs the loops it is asked for, on their locked threads,
// counts the messages of all of them and the CPUs they kept busy.
func TestMeasureCeiling(t *testing.T) {
	c, err := measureCeiling(symmetric, 64, 2, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if c.Cores != 2 || c.Messages < 16 || c.MsgsPerSec <= 0 {
		t.Fatalf("ceiling %+v: want 2 loops of at least 8 messages each", c)
	}
	// The CPUs it kept busy: known wherever the process's CPU time is.
	if cpuTime() > 0 && c.CPUs <= 0 {
		t.Fatalf("ceiling %+v: no CPU use measured", c)
	}
	if got := combineCeilings(Ceiling{MsgsPerSec: 10, CPUs: 1.5}, Ceiling{MsgsPerSec: 20, CPUs: 2}); got.MsgsPerSec != 15 || got.CPUs != 1.75 {
		t.Fatalf("combined %+v: want the means, 15 msgs/s and 1.75 CPUs", got)
	}
}
