// Package report writes a load-generator result as one self-contained HTML
// page: the figures, the throughput and latency over time and the latency
// distribution as inline SVG drawn here, with no script and no external
// stylesheet, so the file can be mailed or archived as it is.
package report

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/loadgen"
)

// binsPerDecade is the resolution of the latency distribution chart.
const binsPerDecade = 10

// Write renders res.
func Write(w io.Writer, res *loadgen.Result) error {
	var table strings.Builder
	if err := res.WriteTable(&table); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(res.Engine))
	for k := range res.Engine {
		names = append(names, k)
	}
	slices.Sort(names)
	var counters []counter
	for _, k := range names {
		counters = append(counters, counter{k, res.Engine[k]})
	}
	d := page{
		Title:      fmt.Sprintf("ratchetd bench: %s", res.Scenario),
		R:          res,
		Table:      table.String(),
		JSON:       string(raw),
		Counters:   counters,
		Throughput: throughputChart(res),
		Latency:    latencyOverTime(res),
		Dist:       distribution(res),
	}
	return pageTmpl.Execute(w, d)
}

type counter struct {
	Name  string
	Value int64
}

type page struct {
	Title                     string
	R                         *loadgen.Result
	Table, JSON               string
	Counters                  []counter
	Throughput, Latency, Dist template.HTML
}

func throughputChart(res *loadgen.Result) template.HTML {
	var pts []point
	for _, s := range res.Timeline {
		pts = append(pts, point{s.T, s.Rate})
	}
	ss := []series{{name: "delivered msgs/s", color: "#4e79a7", points: pts}}
	if res.CeilingMsgsPerSec > 0 && len(pts) > 0 {
		// The ceiling is drawn only when it is on the same scale.
		var peak float64
		for _, p := range pts {
			peak = math.Max(peak, p.y)
		}
		if res.CeilingMsgsPerSec < 4*peak {
			last := pts[len(pts)-1].x
			ss = append(ss, series{name: "crypto-only ceiling", color: "#e15759", points: []point{{0, res.CeilingMsgsPerSec}, {last, res.CeilingMsgsPerSec}}})
		}
	}
	return lineChart("Throughput over time", "seconds", "messages per second", ss)
}

func latencyOverTime(res *loadgen.Result) template.HTML {
	var p50, p99 []point
	for _, s := range res.Timeline {
		if s.Delivered == 0 {
			continue
		}
		p50 = append(p50, point{s.T, s.P50MS})
		p99 = append(p99, point{s.T, s.P99MS})
	}
	return lineChart("Latency over time", "seconds", "milliseconds", []series{
		{name: "p50", color: "#59a14f", points: p50},
		{name: "p99", color: "#f28e2b", points: p99},
	})
}

// distribution merges the histogram's fine buckets into log-spaced bins.
func distribution(res *loadgen.Result) template.HTML {
	var bars []bar
	if res.Histogram != nil {
		bins := map[int]float64{}
		for _, b := range res.Histogram.Buckets() {
			v := math.Max(float64(b.Lo+b.Hi)/2/1e6, 1e-3) // ms, at least 1 µs
			bins[int(math.Floor(math.Log10(v)*binsPerDecade))] += float64(b.Count)
		}
		keys := make([]int, 0, len(bins))
		for k := range bins {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			bars = append(bars, bar{lo: math.Pow(10, float64(k)/binsPerDecade), hi: math.Pow(10, float64(k+1)/binsPerDecade), count: bins[k]})
		}
	}
	l := res.Latency
	return histogramChart("Latency distribution", "milliseconds (log scale)", "messages", bars, []marker{
		{l.P50, "p50"}, {l.P90, "p90"}, {l.P99, "p99"}, {l.P999, "p99.9"},
	})
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct": func(f float64) float64 { return 100 * f },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 820px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: left; border-bottom: 1px solid #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg { width: 100%; height: auto; }
.big { font-size: 1.6em; font-weight: 600; }
</style></head><body>
<h1>{{.Title}}</h1>
<p>{{.R.Started.Format "2006-01-02 15:04:05 MST"}} · {{.R.Host.Go}} · {{.R.Host.OS}} · GOMAXPROCS {{.R.Host.GOMAXPROCS}} ·
{{if .R.Durable}}durable (Badger{{if .R.NoSync}}, no fsync{{end}}){{else}}in-memory store{{end}} · {{.R.Sessions}} conversations · {{.R.PayloadBytes}}-byte payload</p>
<p><span class="big">{{printf "%.0f" .R.MsgsPerSec}} msgs/s</span>
{{if gt .R.CeilingMsgsPerSec 0.0}} — {{printf "%.1f" (pct .R.FractionOfCeiling)}} % of the crypto-only ceiling ({{printf "%.0f" .R.CeilingMsgsPerSec}} msgs/s){{end}};
latency p50 {{printf "%.2f" .R.Latency.P50}} ms, p99 {{printf "%.2f" .R.Latency.P99}} ms.</p>
<h2>Throughput</h2>
{{.Throughput}}
<h2>Latency</h2>
{{.Latency}}
{{.Dist}}
<h2>Figures</h2>
<pre>{{.Table}}</pre>
<h2>Engine counters</h2>
<table>{{range .Counters}}<tr><td>{{.Name}}</td><td class="n">{{.Value}}</td></tr>{{end}}</table>
<h2>How to read it</h2>
<p>Latency runs from the start of <code>Account.Send</code> to the receipt by the application handler, through
the actors, the store commit and the in-memory transport. The ceiling is a straight-line loop of the same
cryptography (encrypt, protobuf wire, the envelope's signature and its recovery, decrypt; for x3dh also the
new account's keys, its bundle's signature and the contact-code envelope it publishes) with no actors and no
persistence, on as many goroutines as the run had sending conversations (at most one per CPU), each locked
to its thread so that the Go scheduler's handling of long cgo calls does not slow it down, measured just
before and just after the run; the fraction shows what everything else costs. The machine row splits all
cores' time: idle and iowait are cores that had nothing to run.</p>
<details><summary>JSON</summary><pre>{{.JSON}}</pre></details>
</body></html>
`))
