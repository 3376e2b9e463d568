package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchJSON is the part of `bench --json` every consumer relies on.
type benchJSON struct {
	Scenario    string  `json:"scenario"`
	Durable     bool    `json:"durable"`
	NoSync      bool    `json:"no_sync"`
	CommitDelay string  `json:"commit_delay"`
	Messages    int64   `json:"messages"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	MsgsPerSec  float64 `json:"msgs_per_sec"`
	Latency     struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
	PeakRSSMB         float64          `json:"peak_rss_mb"`
	CPUSeconds        float64          `json:"cpu_seconds"`
	Allocs            uint64           `json:"allocs"`
	CeilingMsgsPerSec float64          `json:"ceiling_msgs_per_sec"`
	FractionOfCeiling float64          `json:"fraction_of_ceiling"`
	Engine            map[string]int64 `json:"engine"`
}

func benchRun(t *testing.T, args ...string) benchJSON {
	t.Helper()
	args = append([]string{"bench", "--messages", "20", "--json", "--sessions", "2", "--ceiling", "20ms"}, args...)
	code, out, errOut := runCmd(t, "", args...)
	if code != 0 {
		t.Fatalf("%q: status %d: %s", args, code, errOut)
	}
	var r benchJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	if r.Messages < 20 || r.Errors != 0 || r.Seconds <= 0 || r.MsgsPerSec <= 0 {
		t.Errorf("%q: %+v", args, r)
	}
	if r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 || r.PeakRSSMB <= 0 || r.Allocs == 0 {
		t.Errorf("%q: latency or resources missing: %+v", args, r)
	}
	if r.CeilingMsgsPerSec <= 0 || r.FractionOfCeiling <= 0 || r.Engine["Decrypted"] < r.Messages {
		t.Errorf("%q: ceiling or engine counters missing: %+v", args, r)
	}
	return r
}

// Every scenario runs for a tiny workload in memory; its JSON parses and
// its figures are sane. (How fast is for the bench itself to say, never a
// unit test.)
func TestBenchScenarios(t *testing.T) {
	for _, sc := range []string{"burst", "pingpong", "x3dh", "fanout", "sessions"} {
		t.Run(sc, func(t *testing.T) {
			r := benchRun(t, sc, "--durable=false")
			if r.Scenario != sc || r.Durable {
				t.Errorf("scenario %q durable %v", r.Scenario, r.Durable)
			}
		})
	}
}

// A durable run uses Badger in --dir and writes a self-contained HTML
// report with its charts.
func TestBenchDurableReport(t *testing.T) {
	dir := t.TempDir()
	html := filepath.Join(dir, "report.html")
	r := benchRun(t, "--scenario", "pingpong", "--dir", filepath.Join(dir, "data"), "--report", html)
	if !r.Durable || r.Engine["Commits"] == 0 {
		t.Errorf("durable %v, commits %d", r.Durable, r.Engine["Commits"])
	}
	page, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	s := string(page)
	if strings.Count(s, "<svg") != 3 || !strings.Contains(s, "Throughput over time") || !strings.Contains(s, "Latency distribution") {
		t.Errorf("report lacks its charts")
	}
	bare := strings.ReplaceAll(s, `xmlns="http://www.w3.org/2000/svg"`, "")
	for _, external := range []string{"<script", "<link", "src=", "http:", "https:"} {
		if strings.Contains(bare, external) {
			t.Errorf("report is not self-contained: it has %q", external)
		}
	}
}

// --no-sync runs durable with Badger's SyncWrites off, and says so; the
// JSON records --commit-delay too.
func TestBenchNoSync(t *testing.T) {
	r := benchRun(t, "--scenario", "burst", "--no-sync", "--commit-delay", "-1ns")
	if !r.Durable || !r.NoSync || r.Engine["Commits"] == 0 {
		t.Errorf("durable %v, no_sync %v, commits %d", r.Durable, r.NoSync, r.Engine["Commits"])
	}
	if r.CommitDelay != "-1ns" {
		t.Errorf("commit_delay %q, want the flag's -1ns", r.CommitDelay)
	}
	if code, _, _ := runCmd(t, "", "bench", "burst", "--messages", "20", "--no-sync", "--durable=false"); code == 0 {
		t.Errorf("--no-sync with --durable=false accepted")
	}
}

// The table names every figure.
func TestBenchTable(t *testing.T) {
	code, out, errOut := runCmd(t, "", "bench", "burst", "--messages", "20", "--durable=false", "--ceiling", "10ms")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	for _, want := range []string{"msgs/s", "p50", "p99.9", "ceiling", "cpu", "allocations", "peak RSS", "commits"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") {
		t.Errorf("progress line written when stdout is not a terminal")
	}
}

// --cpuprofile, --memprofile and --trace each write their file.
func TestBenchProfiles(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"--cpuprofile": "cpu.prof", "--memprofile": "mem.prof", "--trace": "run.trace"}
	args := []string{"bench", "burst", "--messages", "20", "--durable=false", "--ceiling", "0"}
	for flag, name := range files {
		args = append(args, flag, filepath.Join(dir, name))
	}
	if code, _, errOut := runCmd(t, "", args...); code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	for flag, name := range files {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s wrote nothing: %v", flag, err)
		}
	}
}
