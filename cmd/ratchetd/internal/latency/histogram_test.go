package latency

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// The buckets tile the value range with no gap and no overlap, and every
// value lands in the bucket whose bounds contain it.
func TestBucketsTile(t *testing.T) {
	prevHi := int64(-1)
	for i := range buckets {
		lo, hi := bounds(i)
		if lo != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d = [%d, %d] after %d", i, lo, hi, prevHi)
		}
		prevHi = hi
	}
	if prevHi < int64(MaxValue) {
		t.Fatalf("buckets end at %d, below MaxValue %d", prevHi, MaxValue)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Uint64N(uint64(MaxValue))
		lo, hi := bounds(index(v))
		if int64(v) < lo || int64(v) > hi {
			t.Fatalf("%d in bucket [%d, %d]", v, lo, hi)
		}
		if hi-lo > lo/half+1 {
			t.Fatalf("bucket [%d, %d] wider than 1/%d of its value", lo, hi, half)
		}
	}
}

// Quantiles agree with an exact sort to within the bucket precision.
func TestQuantiles(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(3, 4))
	var exact []time.Duration
	for range 20000 {
		d := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		exact = append(exact, d)
		h.Record(d)
	}
	slices.Sort(exact)
	s := h.Snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := exact[int(q*float64(len(exact)))-1]
		got := s.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.03 || diff < -0.03 {
			t.Errorf("p%v = %v, exact %v", q*100, got, want)
		}
	}
	if s.Total != 20000 || s.Max != exact[len(exact)-1] {
		t.Errorf("total %d max %v", s.Total, s.Max)
	}
}

// A difference of snapshots is the distribution of the interval.
func TestSnapshotSub(t *testing.T) {
	var h Histogram
	for range 100 {
		h.Record(time.Second)
	}
	a := h.Snapshot()
	for range 10 {
		h.Record(time.Millisecond)
	}
	d := h.Snapshot().Sub(a)
	if d.Total != 10 || d.Quantile(1) > 2*time.Millisecond || d.Mean() != time.Millisecond {
		t.Fatalf("interval: total %d, max quantile %v, mean %v", d.Total, d.Quantile(1), d.Mean())
	}
	if d.CountAtOrBelow(time.Millisecond) != 10 || d.CountAtOrBelow(time.Microsecond) != 0 {
		t.Fatalf("cumulative counts wrong")
	}
}

func TestConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h.Record(time.Duration(g*1000 + i))
			}
		}()
	}
	wg.Wait()
	if s := h.Snapshot(); s.Total != 4000 || s.Max != 3999 {
		t.Fatalf("total %d max %v", s.Total, s.Max)
	}
}
