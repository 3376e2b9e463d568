// Package latency is a small HDR-style histogram of durations: log-linear
// buckets (every power of two split into 64 equal sub-buckets, so any
// recorded value is known to within 1/64 ≈ 1.6 %), lock-free recording from
// many goroutines, and snapshots that can be subtracted to get the
// distribution of one interval (the live p99 of a progress line).
//
// It replaces a dependency on hdrhistogram-go: the load generator needs only
// record, quantile, merge and the bucket list for its charts.
package latency

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits  = 7
	subCount = 1 << subBits // values below this are recorded exactly (ns)
	half     = subCount / 2
	// MaxValue is the largest duration kept apart; longer ones are
	// recorded as MaxValue (about 73 minutes).
	MaxValue = time.Duration(1)<<42 - 1
	buckets  = (42-subBits+1)*half + subCount
)

// Histogram records durations. The zero value is ready to use; it must not
// be copied after first use.
type Histogram struct {
	counts [buckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
}

// index is the bucket of v: exact below subCount, then 64 sub-buckets per
// power of two.
func index(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits
	return shift*half + int(v>>shift)
}

// bounds are the smallest and largest value of bucket i.
func bounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	shift := i/half - 1
	sub := int64(i%half + half)
	lo = sub << shift
	return lo, lo + int64(1)<<shift - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	if d > MaxValue {
		d = MaxValue
	}
	h.counts[index(uint64(d))].Add(1)
	h.total.Add(1)
	h.sum.Add(int64(d))
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Snapshot copies the histogram's current counts. Concurrent records may
// land on either side of the copy; each is counted once.
func (h *Histogram) Snapshot() *Snapshot {
	s := &Snapshot{Counts: make([]uint64, buckets)}
	for i := range s.Counts {
		c := h.counts[i].Load()
		s.Counts[i] = c
		s.Total += c
	}
	s.Sum = time.Duration(h.sum.Load())
	s.Max = time.Duration(h.max.Load())
	return s
}

// Snapshot is an immutable copy of a histogram.
type Snapshot struct {
	Counts []uint64
	Total  uint64
	Sum    time.Duration
	Max    time.Duration // of the whole histogram, also in a difference
}

// Sub returns the distribution of what was recorded between prev and s
// (prev may be nil).
func (s *Snapshot) Sub(prev *Snapshot) *Snapshot {
	d := &Snapshot{Counts: make([]uint64, len(s.Counts)), Sum: s.Sum, Max: s.Max}
	for i, c := range s.Counts {
		if prev != nil {
			c -= prev.Counts[i]
		}
		d.Counts[i] = c
		d.Total += c
	}
	if prev != nil {
		d.Sum -= prev.Sum
		d.Max = d.maxRecorded()
	}
	return d
}

// maxRecorded is the top of the highest non-empty bucket.
func (s *Snapshot) maxRecorded() time.Duration {
	for i := len(s.Counts) - 1; i >= 0; i-- {
		if s.Counts[i] > 0 {
			_, hi := bounds(i)
			return time.Duration(hi)
		}
	}
	return 0
}

// Quantile returns the value below which a fraction q of the recorded
// durations lie (q in [0, 1]), as the midpoint of its bucket; zero when
// nothing was recorded.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s == nil || s.Total == 0 {
		return 0
	}
	q = math.Max(0, math.Min(1, q))
	rank := uint64(math.Ceil(q * float64(s.Total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			lo, hi := bounds(i)
			v := time.Duration(lo + (hi-lo)/2)
			if s.Max > 0 && v > s.Max {
				v = s.Max
			}
			return v
		}
	}
	return s.Max
}

// Mean is the arithmetic mean of the recorded durations.
func (s *Snapshot) Mean() time.Duration {
	if s == nil || s.Total == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Total)
}

// Bucket is a non-empty range of the distribution.
type Bucket struct {
	Lo, Hi time.Duration
	Count  uint64
}

// Buckets lists the non-empty buckets in increasing order.
func (s *Snapshot) Buckets() []Bucket {
	var out []Bucket
	for i, c := range s.Counts {
		if c > 0 {
			lo, hi := bounds(i)
			out = append(out, Bucket{Lo: time.Duration(lo), Hi: time.Duration(hi), Count: c})
		}
	}
	return out
}

// CountAtOrBelow is the number of recorded durations that are at most d,
// counting a bucket that straddles d as below it (Prometheus's cumulative
// buckets).
func (s *Snapshot) CountAtOrBelow(d time.Duration) uint64 {
	if d < 0 {
		return 0
	}
	if d > MaxValue {
		d = MaxValue
	}
	last := index(uint64(d))
	var n uint64
	for i := 0; i <= last && i < len(s.Counts); i++ {
		n += s.Counts[i]
	}
	return n
}
