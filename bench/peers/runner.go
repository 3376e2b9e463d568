package peers

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"
)

// Workload names.
const (
	Burst    = "burst"
	PingPong = "pingpong"
	X3DH     = "x3dh"
)

// Workloads lists the workloads in run order.
func Workloads() []string { return []string{Burst, PingPong, X3DH} }

// Config sizes a run.
type Config struct {
	// Rounds is the number of samples per implementation and workload. In
	// each round every workload runs once on every implementation, in an
	// order rotated from round to round, so that drift in the machine's
	// load spreads over all of them.
	Rounds int `json:"rounds"`
	// Messages per sample of each workload. Burst is a burst's length;
	// PingPong is rounded up to an even number so that every sample starts
	// from side A; X3DH counts sessions.
	Burst    int `json:"burst_msgs"`
	PingPong int `json:"pingpong_msgs"`
	X3DH     int `json:"x3dh_sessions"`
	// Steady warms implementations whose cost grows with a store
	// (Impl.SteadyState) to their steady state before measuring.
	Steady bool `json:"steady"`
	// Progress receives one line per round when not nil.
	Progress io.Writer `json:"-"`
}

// Sample is one timed run of a workload.
type Sample struct {
	NsPerMsg     float64 `json:"ns_per_msg"`
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	BytesPerMsg  float64 `json:"bytes_per_msg"`
}

// Result summarizes the samples of one implementation on one workload.
type Result struct {
	Impl     string `json:"impl"`
	Workload string `json:"workload"`
	// NA is set, with the reason, when the implementation has no path for
	// the workload; the numbers are then zero.
	NA           string   `json:"na,omitempty"`
	Messages     int      `json:"messages_per_sample,omitempty"`
	Samples      []Sample `json:"samples,omitempty"`
	MedianNs     float64  `json:"median_ns_per_msg,omitempty"`
	BestNs       float64  `json:"best_ns_per_msg,omitempty"`
	MsgsPerSec   float64  `json:"msgs_per_sec,omitempty"`
	AllocsPerMsg float64  `json:"allocs_per_msg,omitempty"`
	BytesPerMsg  float64  `json:"bytes_per_msg,omitempty"`
	// Ratio is ratchetd's throughput divided by this implementation's on
	// the same workload (median against median): above 1, ratchetd is
	// faster. Zero when either side has no result.
	Ratio float64 `json:"ratchetd_ratio,omitempty"`
}

// runner is one implementation's prepared state for one workload.
type runner struct {
	impl     Impl
	workload string
	n        int
	op       func(i int) error // one message (or session)
	na       string
	samples  []Sample
}

func newRunner(im Impl, w string, cfg Config) (*runner, error) {
	r := &runner{impl: im, workload: w}
	pl := Payload()
	switch w {
	case Burst, PingPong:
		p, err := im.NewPair()
		if err != nil {
			return nil, fmt.Errorf("%s: set-up: %w", im.Name, err)
		}
		if w == Burst {
			r.n = cfg.Burst
			r.op = func(int) error { return send(p, 0, pl) }
		} else {
			r.n = cfg.PingPong + cfg.PingPong%2
			r.op = func(i int) error { return send(p, i%2, pl) }
		}
	case X3DH:
		if im.NewHandshaker == nil {
			r.na = im.NoX3DH
			return r, nil
		}
		h, err := im.NewHandshaker()
		if err != nil {
			return nil, fmt.Errorf("%s: set-up: %w", im.Name, err)
		}
		r.n = cfg.X3DH
		r.op = func(int) error {
			got, err := h.Handshake(pl)
			if err != nil {
				return err
			}
			return checkPlaintext(got, pl)
		}
	default:
		return nil, fmt.Errorf("peers: unknown workload %q", w)
	}
	return r, nil
}

func send(p Pair, from int, pl []byte) error {
	got, err := p.Send(from, pl)
	if err != nil {
		return err
	}
	return checkPlaintext(got, pl)
}

// warm runs one untimed sample and, with steady set, enough messages for
// each receiving side to reach the implementation's steady state.
func (r *runner) warm(steady bool) error {
	extra := 0
	if steady && r.workload != X3DH {
		extra = r.impl.SteadyState
		if r.workload == PingPong {
			extra *= 2 // each side receives half
		}
	}
	for i := range r.n + extra {
		if err := r.op(i); err != nil {
			return fmt.Errorf("%s/%s: warm-up: %w", r.impl.Name, r.workload, err)
		}
	}
	return nil
}

func (r *runner) sample() error {
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for i := range r.n {
		if err := r.op(i); err != nil {
			return fmt.Errorf("%s/%s: %w", r.impl.Name, r.workload, err)
		}
	}
	el := time.Since(start)
	runtime.ReadMemStats(&m1)
	n := float64(r.n)
	r.samples = append(r.samples, Sample{
		NsPerMsg:     float64(el.Nanoseconds()) / n,
		AllocsPerMsg: float64(m1.Mallocs-m0.Mallocs) / n,
		BytesPerMsg:  float64(m1.TotalAlloc-m0.TotalAlloc) / n,
	})
	return nil
}

// Run measures every workload on every implementation and returns one
// Result per pair, ordered by workload then implementation.
func Run(cfg Config, impls []Impl, workloads []string) ([]Result, error) {
	if cfg.Rounds < 1 {
		return nil, fmt.Errorf("peers: rounds must be at least 1")
	}
	grid := make([][]*runner, len(workloads))
	for wi, w := range workloads {
		for _, im := range impls {
			r, err := newRunner(im, w, cfg)
			if err != nil {
				return nil, err
			}
			if r.na == "" && r.n < 1 {
				return nil, fmt.Errorf("peers: %s: messages per sample must be at least 1", w)
			}
			grid[wi] = append(grid[wi], r)
		}
	}
	for _, row := range grid {
		for _, r := range row {
			if r.na == "" {
				if err := r.warm(cfg.Steady); err != nil {
					return nil, err
				}
			}
		}
	}
	for round := range cfg.Rounds {
		start := time.Now()
		for _, row := range grid {
			for k := range row {
				r := row[(k+round)%len(row)]
				if r.na != "" {
					continue
				}
				if err := r.sample(); err != nil {
					return nil, err
				}
			}
		}
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "round %d/%d: %.1fs\n", round+1, cfg.Rounds, time.Since(start).Seconds())
		}
	}

	var out []Result
	for wi, row := range grid {
		var base float64
		for _, r := range row {
			if r.impl.Name == "ratchetd" && r.na == "" {
				base = median(r.samples, func(s Sample) float64 { return s.NsPerMsg })
			}
		}
		for _, r := range row {
			res := Result{Impl: r.impl.Name, Workload: workloads[wi], NA: r.na}
			if r.na == "" {
				ns := func(s Sample) float64 { return s.NsPerMsg }
				res.Messages = r.n
				res.Samples = r.samples
				res.MedianNs = median(r.samples, ns)
				res.BestNs = slices.MinFunc(r.samples, func(a, b Sample) int { return cmpFloat(a.NsPerMsg, b.NsPerMsg) }).NsPerMsg
				res.MsgsPerSec = 1e9 / res.MedianNs
				res.AllocsPerMsg = median(r.samples, func(s Sample) float64 { return s.AllocsPerMsg })
				res.BytesPerMsg = median(r.samples, func(s Sample) float64 { return s.BytesPerMsg })
				if base > 0 {
					res.Ratio = res.MedianNs / base
				}
			}
			out = append(out, res)
		}
	}
	return out, nil
}

func median(s []Sample, f func(Sample) float64) float64 {
	v := make([]float64, len(s))
	for i := range s {
		v[i] = f(s[i])
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
