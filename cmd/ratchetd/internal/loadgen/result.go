package loadgen

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/latency"
)

// Result is the outcome of a run; its JSON form is `bench --json`.
type Result struct {
	Scenario string `json:"scenario"`
	Durable  bool   `json:"durable"`
	NoSync   bool   `json:"no_sync,omitempty"` // durable without fsync
	// CommitDelay is --commit-delay when set ("" : the engine's default;
	// negative: off).
	CommitDelay  string   `json:"commit_delay,omitempty"`
	Sessions     int      `json:"sessions"`
	Senders      int      `json:"senders,omitempty"` // per conversation (burst)
	PayloadBytes int      `json:"payload_bytes"`
	Messages     int64    `json:"messages"` // deliveries received in the measured phase
	Sent         int64    `json:"sent"`     // successful Send calls
	Expected     int64    `json:"expected"` // deliveries those sends addressed
	Lost         int64    `json:"lost"`     // addressed, not received by the end of the drain
	Errors       int64    `json:"errors"`   // send errors, stalls, losses, decrypt failures
	ErrorSamples []string `json:"error_samples,omitempty"`
	Seconds      float64  `json:"seconds"`
	MsgsPerSec   float64  `json:"msgs_per_sec"`
	Latency      Latency  `json:"latency_ms"`

	CeilingPrimitive  string  `json:"ceiling_primitive,omitempty"`
	CeilingMsgsPerSec float64 `json:"ceiling_msgs_per_sec"`
	CeilingCores      int     `json:"ceiling_cores,omitempty"`
	// CeilingCPUs is how many CPUs the ceiling's loops kept busy (the
	// process's CPU time over the wall time, mean of its two halves).
	CeilingCPUs float64 `json:"ceiling_cpus,omitempty"`
	// CeilingRuns: the ceiling before and after the measured phase, whose
	// mean is CeilingMsgsPerSec (their spread is the machine's noise).
	CeilingRuns       []float64 `json:"ceiling_runs_msgs_per_sec,omitempty"`
	FractionOfCeiling float64   `json:"fraction_of_ceiling"`

	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUPerMsgUS float64 `json:"cpu_per_msg_us"`
	// HostCPU is the whole machine during the measured phase (Linux).
	HostCPU      *HostCPU `json:"host_cpu,omitempty"`
	Allocs       uint64   `json:"allocs"`
	AllocBytes   uint64   `json:"alloc_bytes"`
	AllocsPerMsg float64  `json:"allocs_per_msg"`
	BytesPerMsg  float64  `json:"alloc_bytes_per_msg"`
	PeakRSSMB    float64  `json:"peak_rss_mb"`
	RSSMB        float64  `json:"rss_mb,omitempty"`
	DiskBytes    int64    `json:"disk_bytes,omitempty"` // the data directory after close (compacted)

	SetupSeconds        float64 `json:"setup_seconds"`
	HeapPerConversation float64 `json:"heap_per_conversation_bytes,omitempty"`

	// Commits is the engine's group commit, when its Stats report it.
	Commits *Commits         `json:"commits,omitempty"`
	Engine  map[string]int64 `json:"engine"`
	Host    Host             `json:"host"`
	Started time.Time        `json:"started"`

	Timeline  []Sample          `json:"-"`
	Histogram *latency.Snapshot `json:"-"`
}

// Latency are percentiles in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Commits describes the store transactions of the measured phase.
type Commits struct {
	Transactions   int64   `json:"transactions"`
	Writes         int64   `json:"writes"`
	WritesPerBatch float64 `json:"writes_per_batch"`
	MaxBatch       int64   `json:"max_batch,omitempty"` // in commit requests
	MsgsPerCommit  float64 `json:"msgs_per_commit"`
}

// Host is where the run ran.
type Host struct {
	Go         string `json:"go"`
	OS         string `json:"os"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUs       int    `json:"cpus"`
}

func newResult(cfg Config) *Result {
	senders := 0
	if cfg.Scenario == Burst {
		senders = cfg.Senders
	}
	var delay string
	if cfg.CommitDelay != 0 {
		delay = cfg.CommitDelay.String()
	}
	return &Result{
		Senders:     senders,
		CommitDelay: delay,
		Scenario:    cfg.Scenario, Durable: cfg.Durable, NoSync: cfg.NoSync, Sessions: cfg.Sessions, PayloadBytes: cfg.Payload,
		Started: time.Now().UTC().Truncate(time.Second),
		Host:    Host{Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, GOMAXPROCS: runtime.GOMAXPROCS(0), CPUs: runtime.NumCPU()},
	}
}

// fill computes the figures of the measured phase.
func (res *Result) fill(r *run, stats ratchetd.Stats, lost int64, elapsed time.Duration, before, after usage, timeline []Sample) {
	p := r.probe
	res.Messages = p.delivered.Load()
	res.Sent = p.sent.Load()
	res.Expected = p.expected.Load()
	res.Lost = lost
	res.Engine = counters(stats)
	res.Errors = p.errs.Load() + lost + res.Engine["DecryptFailures"] + res.Engine["ActorFailures"]
	res.ErrorSamples = p.errorSamples()
	if n := res.Engine["ActorFailures"]; n > 0 {
		res.ErrorSamples = append(res.ErrorSamples, fmt.Sprintf("%d panics in the engine's actors (logged with their stacks)", n))
	}
	if lost > 0 {
		res.ErrorSamples = append(res.ErrorSamples, fmt.Sprintf("%d addressed deliveries not received within %v", lost, r.cfg.DrainTimeout))
	}
	res.Seconds = elapsed.Seconds()
	if res.Seconds > 0 {
		res.MsgsPerSec = float64(res.Messages) / res.Seconds
	}
	h := p.hist.Snapshot()
	res.Histogram = h
	res.Latency = Latency{
		P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)), P999: ms(h.Quantile(0.999)),
		Max: ms(h.Max), Mean: ms(h.Mean()),
	}
	res.CPUSeconds = (after.cpu - before.cpu).Seconds()
	res.HostCPU = hostCPU(before.host, after.host)
	res.Allocs = after.mallocs - before.mallocs
	res.AllocBytes = after.totalAlloc - before.totalAlloc
	if res.Messages > 0 {
		n := float64(res.Messages)
		res.CPUPerMsgUS = res.CPUSeconds * 1e6 / n
		res.AllocsPerMsg = float64(res.Allocs) / n
		res.BytesPerMsg = float64(res.AllocBytes) / n
	}
	res.PeakRSSMB = float64(peakRSS()) / (1 << 20)
	res.RSSMB = float64(procStatus("VmRSS")) / (1 << 20)
	// The counters cover setup too; the commit figures are those of the
	// whole run, which the measured phase dominates.
	if tx, ok := res.Engine["Commits"]; ok && tx > 0 {
		c := &Commits{Transactions: tx, Writes: res.Engine["CommittedWrites"], MaxBatch: res.Engine["MaxBatch"]}
		c.WritesPerBatch = float64(c.Writes) / float64(tx)
		c.MsgsPerCommit = float64(res.Messages) / float64(tx)
		res.Commits = c
	}
	res.Timeline = timeline
}

func (res *Result) setCeiling(c Ceiling) {
	res.CeilingPrimitive = c.Primitive
	res.CeilingMsgsPerSec = c.MsgsPerSec
	res.CeilingCores = c.Cores
	res.CeilingCPUs = c.CPUs
	res.CeilingRuns = c.Runs
	if c.MsgsPerSec > 0 {
		res.FractionOfCeiling = res.MsgsPerSec / c.MsgsPerSec
	}
}

// WriteTable prints the result for a person.
func (res *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	store := "in-memory store"
	if res.Durable {
		store = "durable (Badger, SyncWrites)"
		if res.NoSync {
			store = "durable (Badger, no fsync: safe against a crash, not a power loss)"
		}
	}
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(f, a...)) }
	conv := fmt.Sprintf("%d conversations", res.Sessions)
	if res.Senders > 0 {
		conv += fmt.Sprintf(" × %d senders", res.Senders)
	}
	row("scenario", "%s — %s, %d-byte payload, %s", res.Scenario, conv, res.PayloadBytes, store)
	row("messages", "%s delivered (%s sends addressed %s), %d lost, %d errors",
		thousands(res.Messages), thousands(res.Sent), thousands(res.Expected), res.Lost, res.Errors)
	row("seconds", "%.2f measured (setup %.2f)", res.Seconds, res.SetupSeconds)
	row("msgs/s", "%s", thousands(int64(res.MsgsPerSec+0.5)))
	row("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s (send → receipt)",
		fmtMS(res.Latency.P50), fmtMS(res.Latency.P90), fmtMS(res.Latency.P99), fmtMS(res.Latency.P999), fmtMS(res.Latency.Max))
	if res.CeilingMsgsPerSec > 0 {
		runs := ""
		if len(res.CeilingRuns) == 2 {
			runs = fmt.Sprintf("; %s before the run, %s after", thousands(int64(res.CeilingRuns[0]+0.5)), thousands(int64(res.CeilingRuns[1]+0.5)))
		}
		busy := ""
		if res.CeilingCPUs > 0 {
			busy = fmt.Sprintf(", %.2f busy", res.CeilingCPUs)
		}
		row("ceiling", "%s msgs/s crypto only (%s, %d core%s%s%s) → engine at %.1f %%",
			thousands(int64(res.CeilingMsgsPerSec+0.5)), res.CeilingPrimitive, res.CeilingCores, plural(res.CeilingCores), busy, runs, 100*res.FractionOfCeiling)
	} else {
		row("ceiling", "not measured")
	}
	row("cpu", "%.2f s (%.2f cores busy), %.0f µs per message", res.CPUSeconds, res.CPUSeconds/max(res.Seconds, 1e-9), res.CPUPerMsgUS)
	if h := res.HostCPU; h != nil {
		row("machine", "user %.0f %%, system %.0f %%, idle %.0f %%, iowait %.0f %%, irq %.0f %%, steal %.0f %% (all cores, all processes)",
			100*h.User, 100*h.System, 100*h.Idle, 100*h.IOWait, 100*h.IRQ, 100*h.Steal)
	}
	row("allocations", "%s (%.0f per message, %s per message)", thousands(int64(res.Allocs)), res.AllocsPerMsg, bytesIEC(res.BytesPerMsg))
	mem := fmt.Sprintf("peak RSS %.1f MB", res.PeakRSSMB)
	if res.HeapPerConversation != 0 {
		mem += fmt.Sprintf(", %s of live heap per conversation (both ends)", bytesIEC(res.HeapPerConversation))
	}
	if res.DiskBytes > 0 {
		mem += fmt.Sprintf(", %s on disk after close", bytesIEC(float64(res.DiskBytes)))
	}
	row("memory", "%s", mem)
	if c := res.Commits; c != nil {
		row("commits", "%s transactions, %.1f writes each, largest batch %d requests, %.2f messages per commit",
			thousands(c.Transactions), c.WritesPerBatch, c.MaxBatch, c.MsgsPerCommit)
	} else {
		row("commits", "n/a (the engine's Stats report no commit counters)")
	}
	e := res.Engine
	row("engine", "decrypted %s, X3DH %d active / %d passive, duplicates %d, decrypt failures %d, published %s",
		thousands(e["Decrypted"]), e["X3DHActive"], e["X3DHPassive"], e["Duplicates"], e["DecryptFailures"], thousands(e["Published"]))
	for _, s := range res.ErrorSamples {
		row("error", "%s", s)
	}
	return tw.Flush()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func fmtMS(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 1:
		return fmt.Sprintf("%.2f ms", v)
	default:
		return fmt.Sprintf("%.0f µs", v*1000)
	}
}

// thousands formats n with thin separators: 12,345.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func bytesIEC(v float64) string {
	switch {
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", v)
	}
}
