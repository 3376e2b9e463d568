package loadgen

import (
	"fmt"
	"sync"
	"time"

	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/latency"
)

// Sample is one interval of the timeline: what was delivered in it and the
// latency of those deliveries.
type Sample struct {
	T         float64 `json:"t"` // seconds since the start, at the interval's end
	Delivered int64   `json:"delivered"`
	Rate      float64 `json:"rate"` // deliveries per second in the interval
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	Errors    int64   `json:"errors"`
}

// sampler records the timeline and refreshes the progress line.
type sampler struct {
	r     *run
	start time.Time
	done  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	timeline []Sample
	last     *latency.Snapshot
	lastN    int64
	lastT    time.Time
}

func startSampler(r *run, start time.Time) *sampler {
	s := &sampler{r: r, start: start, done: make(chan struct{}), last: r.probe.hist.Snapshot(), lastT: start}
	s.lastN = r.probe.delivered.Load()
	s.wg.Add(1)
	go s.loop()
	return s
}

func (s *sampler) loop() {
	defer s.wg.Done()
	t := time.NewTicker(s.r.cfg.Sample)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			smp := s.take(now)
			s.progress(now, smp)
		}
	}
}

// take closes the current interval.
func (s *sampler) take(now time.Time) Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.r.probe.hist.Snapshot()
	d := snap.Sub(s.last)
	n := s.r.probe.delivered.Load()
	smp := Sample{
		T:         now.Sub(s.start).Seconds(),
		Delivered: n - s.lastN,
		P50MS:     ms(d.Quantile(0.5)),
		P99MS:     ms(d.Quantile(0.99)),
		Errors:    s.r.probe.errs.Load(),
	}
	if dt := now.Sub(s.lastT).Seconds(); dt > 0 {
		smp.Rate = float64(smp.Delivered) / dt
	}
	s.last, s.lastN, s.lastT = snap, n, now
	s.timeline = append(s.timeline, smp)
	return smp
}

// progress rewrites the status line: rate, p99 and errors of the last
// interval, elapsed time and what remains.
func (s *sampler) progress(now time.Time, smp Sample) {
	w := s.r.cfg.Progress
	if w == nil {
		return
	}
	cfg := s.r.cfg
	elapsed := now.Sub(s.start)
	n := s.r.probe.delivered.Load()
	var eta time.Duration = -1
	if cfg.Duration > 0 {
		eta = cfg.Duration - elapsed
	}
	if cfg.Messages > 0 && n > 0 {
		byCount := time.Duration(float64(elapsed) * float64(int64(cfg.Messages)-n) / float64(n))
		if eta < 0 || byCount < eta {
			eta = byCount
		}
	}
	line := fmt.Sprintf("%s  %d msgs  %.0f msgs/s  p99 %.2f ms  %d errors  %s elapsed",
		cfg.Scenario, n, smp.Rate, smp.P99MS, smp.Errors, elapsed.Truncate(100*time.Millisecond))
	if eta >= 0 {
		line += fmt.Sprintf("  ETA %s", max(eta, 0).Truncate(100*time.Millisecond))
	}
	fmt.Fprintf(w, "\r\033[K%s", line)
}

// stop ends the timeline with a last (partial) interval at end.
func (s *sampler) stop(end time.Time) {
	close(s.done)
	s.wg.Wait()
	if end.Sub(s.lastT) > time.Millisecond || len(s.timeline) == 0 {
		s.take(end)
	}
	if s.r.cfg.Progress != nil {
		fmt.Fprint(s.r.cfg.Progress, "\r\033[K")
	}
}

func (s *sampler) samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.timeline...)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
