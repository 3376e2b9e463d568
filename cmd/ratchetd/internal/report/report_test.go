package report

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/latency"
	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/loadgen"
)

// The page is self-contained, escapes what it prints, and draws its three
// charts from the timeline and the histogram.
func TestWrite(t *testing.T) {
	var h latency.Histogram
	for i := range 1000 {
		h.Record(time.Duration(i%50+1) * 100 * time.Microsecond)
	}
	res := &loadgen.Result{
		Scenario: "burst<script>", MsgsPerSec: 1234, CeilingMsgsPerSec: 2000, FractionOfCeiling: 0.617,
		Latency:   loadgen.Latency{P50: 2.5, P90: 4, P99: 4.9, P999: 5},
		Engine:    map[string]int64{"Decrypted": 1000},
		Timeline:  []loadgen.Sample{{T: 0.25, Rate: 1200, P50MS: 2, P99MS: 5, Delivered: 300}, {T: 0.5, Rate: 1300, P50MS: 2.5, P99MS: 4, Delivered: 325}},
		Histogram: h.Snapshot(),
	}
	var b bytes.Buffer
	if err := Write(&b, res); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if strings.Count(page, "<svg") != 3 || strings.Count(page, "<rect") < 5 || !strings.Contains(page, "<path d=\"M") {
		t.Fatalf("charts missing")
	}
	if strings.Contains(page, "<script") || !strings.Contains(page, "burst&lt;script&gt;") {
		t.Fatalf("scenario name not escaped")
	}
	if !strings.Contains(page, "61.7 % of the crypto-only ceiling") {
		t.Fatalf("fraction of the ceiling missing")
	}
}

func TestNiceTicks(t *testing.T) {
	for _, c := range []struct {
		max, top float64
		n        int
	}{{3.01, 4, 5}, {9500, 10000, 6}, {0, 1, 2}, {0.42, 0.5, 6}} {
		ticks, top := niceTicks(c.max)
		if top != c.top || len(ticks) != c.n || ticks[0] != 0 {
			t.Errorf("niceTicks(%v) = %v, %v", c.max, ticks, top)
		}
	}
	for v, want := range map[float64]string{0: "0", 12500: "12.5k", 2000000: "2M", 0.25: "0.25", 1.5: "1.5", 250: "250"} {
		if got := short(v); got != want {
			t.Errorf("short(%v) = %q, want %q", v, got, want)
		}
	}
}
