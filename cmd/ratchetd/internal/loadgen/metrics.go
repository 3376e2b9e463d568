package loadgen

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ratchetd/ratchetd"
)

// Monitor exposes the run in progress as Prometheus metrics: the engine's
// Stats and the load generator's own counters, read at each scrape (both
// are atomic counters, so a scrape costs a few loads, no sampling loop).
type Monitor struct {
	cur atomic.Pointer[run]
	reg *prometheus.Registry
}

// NewMonitor returns a Monitor with the Go runtime and process collectors.
func NewMonitor() *Monitor {
	m := &Monitor{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), (*collector)(m))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Monitor) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *Monitor) attach(r *run) { m.cur.Store(r) }
func (m *Monitor) detach(r *run) { m.cur.CompareAndSwap(r, nil) }

// failureReasons are the Stats counters exported as
// ratchetd_failures_total{reason=...}.
var failureReasons = map[string]string{
	"DecryptFailures": "decrypt_failure",
	"Duplicates":      "duplicate",
	"Malformed":       "malformed",
	"BadBundles":      "bad_bundle",
	"NotForDevice":    "not_for_device",
	"Unsupported":     "unsupported",
	"Corrupt":         "corrupt",
	"BadEnvelopes":    "bad_envelope",
}

// latencyBuckets are the upper bounds (seconds) of the exported histogram:
// 100 µs to 10 s, three per decade.
var latencyBuckets = []float64{0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10}

var (
	descUp         = prometheus.NewDesc("ratchetd_bench_running", "1 while a load runs.", []string{"scenario", "durable"}, nil)
	descSent       = prometheus.NewDesc("ratchetd_bench_messages_sent_total", "Successful Send calls of the load generator.", nil, nil)
	descEncrypted  = prometheus.NewDesc("ratchetd_messages_encrypted_total", "Messages encrypted: recipient installations the successful sends addressed.", nil, nil)
	descDelivered  = prometheus.NewDesc("ratchetd_bench_messages_delivered_total", "Load-generator messages received by the application handler.", nil, nil)
	descErrors     = prometheus.NewDesc("ratchetd_bench_errors_total", "Send errors and receipts that never came.", nil, nil)
	descConvs      = prometheus.NewDesc("ratchetd_bench_conversations", "Conversations set up by the load generator.", nil, nil)
	descLatency    = prometheus.NewDesc("ratchetd_bench_latency_seconds", "Send start to handler receipt.", nil, nil)
	descDecrypted  = prometheus.NewDesc("ratchetd_messages_decrypted_total", "Messages decrypted by the engine.", nil, nil)
	descFailures   = prometheus.NewDesc("ratchetd_failures_total", "Messages the engine refused or could not use, by reason.", []string{"reason"}, nil)
	descSessionsUp = prometheus.NewDesc("ratchetd_sessions_active", "PeerSession actors in memory.", nil, nil)
	descBatch      = prometheus.NewDesc("ratchetd_commit_batch_writes", "Writes per group commit.", nil, nil)
	descCommitLat  = prometheus.NewDesc("ratchetd_commit_latency_seconds", "Time one group commit took in the store.", nil, nil)
)

// collector is the Monitor seen as a prometheus.Collector. It is
// unchecked (Describe sends nothing): the engine counters it exports follow
// the engine's Stats fields, which are not known in advance.
type collector Monitor

func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.cur.Load()
	if r == nil {
		return
	}
	p := r.probe
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1, r.cfg.Scenario, strconv.FormatBool(r.cfg.Durable))
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(p.sent.Load()))
	ch <- prometheus.MustNewConstMetric(descEncrypted, prometheus.CounterValue, float64(p.expected.Load()))
	ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(p.delivered.Load()))
	ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(p.errs.Load()))
	ch <- prometheus.MustNewConstMetric(descConvs, prometheus.GaugeValue, float64(r.conversations.Load()))

	h := p.hist.Snapshot()
	buckets := make(map[float64]uint64, len(latencyBuckets))
	for _, b := range latencyBuckets {
		buckets[b] = h.CountAtOrBelow(time.Duration(b * float64(time.Second)))
	}
	ch <- prometheus.MustNewConstHistogram(descLatency, h.Total, h.Sum.Seconds(), buckets)

	st := r.eng.Stats()
	ch <- prometheus.MustNewConstHistogram(descBatch, uint64(st.Commits), float64(st.CommittedWrites), cumulative(st.CommitBatch[:], ratchetd.CommitBatchBuckets[:]))
	ch <- prometheus.MustNewConstHistogram(descCommitLat, uint64(st.Commits), float64(st.CommitNanos)/1e9, cumulative(st.CommitLatency[:], ratchetd.CommitLatencyBuckets[:]))
	stats := counters(st)
	ch <- prometheus.MustNewConstMetric(descDecrypted, prometheus.CounterValue, float64(stats["Decrypted"]))
	for field, reason := range failureReasons {
		if v, ok := stats[field]; ok {
			ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(v), reason)
		}
	}
	if v, ok := stats["SessionsActive"]; ok {
		ch <- prometheus.MustNewConstMetric(descSessionsUp, prometheus.GaugeValue, float64(v))
	}
	// Every engine counter, under its own name as well.
	for field, v := range stats {
		name, typ := "ratchetd_engine_"+snake(field)+"_total", prometheus.CounterValue
		if gauges[field] {
			name, typ = "ratchetd_engine_"+snake(field), prometheus.GaugeValue
		}
		d := prometheus.NewDesc(name, "Engine Stats."+field+".", nil, nil)
		ch <- prometheus.MustNewConstMetric(d, typ, float64(v))
	}
}

// cumulative turns per-bucket counts (the last: above every bound) into
// Prometheus's cumulative buckets.
func cumulative(counts []int64, bounds []float64) map[float64]uint64 {
	out := make(map[float64]uint64, len(bounds))
	var n uint64
	for i, b := range bounds {
		n += uint64(counts[i])
		out[b] = n
	}
	return out
}
