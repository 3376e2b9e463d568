package loadgen

import (
	"context"
	"testing"
	"time"
)

// Every scenario runs end to end on a tiny workload: the messages are
// delivered, nothing is lost, and the figures are filled in.
func TestScenarios(t *testing.T) {
	for _, sc := range Scenarios {
		t.Run(sc, func(t *testing.T) {
			res, err := Run(context.Background(), Config{Scenario: sc, Sessions: 2, Messages: 20, Ceiling: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Messages < 20 || res.Errors != 0 || res.Lost != 0 {
				t.Fatalf("%d delivered, %d errors (%v), %d lost", res.Messages, res.Errors, res.ErrorSamples, res.Lost)
			}
			if res.MsgsPerSec <= 0 || res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 || res.CeilingMsgsPerSec <= 0 || res.FractionOfCeiling <= 0 {
				t.Fatalf("figures missing: %+v", res)
			}
			// The ceiling brackets the run: measured before and after it.
			if r := res.CeilingRuns; len(r) != 2 || r[0] <= 0 || r[1] <= 0 || res.CeilingMsgsPerSec != (r[0]+r[1])/2 {
				t.Fatalf("ceiling runs %v, ceiling %.0f", r, res.CeilingMsgsPerSec)
			}
			t.Logf("%s: %.0f msgs/s, p50 %.2f ms, ceiling %.0f/s (%.1f%%)", sc, res.MsgsPerSec, res.Latency.P50, res.CeilingMsgsPerSec, 100*res.FractionOfCeiling)
		})
	}
}
