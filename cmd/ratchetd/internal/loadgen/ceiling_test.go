package loadgen

import "testing"

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
