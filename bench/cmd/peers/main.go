// Command peers runs the burst, pingpong and x3dh workloads through
// ratchetd's crypto and through go.mau.fi/libsignal and
// status-im/doubleratchet in one process, interleaved over several rounds,
// and prints each implementation's throughput with ratchetd's ratio to it.
//
//	go run ./cmd/peers [-rounds 9] [-impls a,b] [-workloads burst,pingpong,x3dh] [-json] [-jsonfile f] [-list]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ratchetd/ratchetd/bench/peers"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

// Env describes where and with what a run was made.
type Env struct {
	Date       string            `json:"date"`
	GoVersion  string            `json:"go_version"`
	OSArch     string            `json:"os_arch"`
	CPU        string            `json:"cpu"`
	NumCPU     int               `json:"num_cpu"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	CGO        string            `json:"cgo_enabled"`
	Modules    map[string]string `json:"modules"`
	Config     peers.Config      `json:"config"`
	Seconds    float64           `json:"seconds"`
}

// Report is the --json output.
type Report struct {
	Env     Env               `json:"env"`
	Impls   map[string]string `json:"impls"`
	Results []peers.Result    `json:"results"`
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := peers.Config{}
	fs.IntVar(&cfg.Rounds, "rounds", 9, "samples per implementation and workload (interleaved rounds)")
	fs.IntVar(&cfg.Burst, "burst", 1000, "messages per burst sample (one way, in a row)")
	fs.IntVar(&cfg.PingPong, "pingpong", 300, "messages per pingpong sample (strict alternation; rounded up to even)")
	fs.IntVar(&cfg.X3DH, "x3dh", 60, "new sessions per x3dh sample")
	fs.BoolVar(&cfg.Steady, "steady", true, "warm key-retaining implementations to their steady state (3000 received keys per side) first")
	procs := fs.Int("procs", 1, "GOMAXPROCS for the run (1: each message's GC cost is paid on the same core)")
	implList := fs.String("impls", "", "comma-separated implementations (default: all; see -list)")
	wlList := fs.String("workloads", strings.Join(peers.Workloads(), ","), "comma-separated workloads")
	asJSON := fs.Bool("json", false, "print the results as JSON instead of a table")
	jsonFile := fs.String("jsonfile", "", "also write the JSON report to this file")
	list := fs.Bool("list", false, "list the implementations and what each does per message, then exit")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	impls := peers.Impls()
	if *implList != "" {
		var err error
		if impls, err = peers.Lookup(split(*implList)); err != nil {
			return err
		}
	}
	if *list {
		for _, im := range impls {
			fmt.Fprintf(stdout, "%s\n    %s\n", im.Name, im.Summary)
		}
		return nil
	}
	workloads := split(*wlList)
	for _, w := range workloads {
		if !contains(peers.Workloads(), w) {
			return fmt.Errorf("unknown workload %q (want %s)", w, strings.Join(peers.Workloads(), ", "))
		}
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if !*quiet {
		cfg.Progress = stderr
		fmt.Fprintf(stderr, "peers: %d rounds × %s × %d implementations (GOMAXPROCS=%d)\n",
			cfg.Rounds, strings.Join(workloads, "/"), len(impls), runtime.GOMAXPROCS(0))
	}
	start := time.Now()
	results, err := peers.Run(cfg, impls, workloads)
	if err != nil {
		return err
	}
	cfg.Progress = nil
	env := environment(cfg, time.Since(start))
	rep := Report{Env: env, Impls: map[string]string{}, Results: results}
	for _, im := range impls {
		rep.Impls[im.Name] = im.Summary
	}
	if *jsonFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printTable(stdout, env, impls, results)
	return nil
}

func printTable(w io.Writer, env Env, impls []peers.Impl, results []peers.Result) {
	fmt.Fprintf(w, "%s, %s, %s (%d CPUs), GOMAXPROCS=%d, cgo=%s\n", env.Date, env.GoVersion, env.CPU, env.NumCPU, env.GOMAXPROCS, env.CGO)
	var mods []string
	for _, m := range []string{"go.mau.fi/libsignal", "github.com/status-im/doubleratchet", "github.com/ethereum/go-ethereum", "golang.org/x/crypto", "google.golang.org/protobuf"} {
		if v, ok := env.Modules[m]; ok {
			mods = append(mods, m+" "+v)
		}
	}
	fmt.Fprintf(w, "%s\n", strings.Join(mods, ", "))
	c := env.Config
	fmt.Fprintf(w, "%d rounds; per sample: burst %d msgs, pingpong %d msgs, x3dh %d sessions; steady=%v; %.0fs\n\n",
		c.Rounds, c.Burst, c.PingPong+c.PingPong%2, c.X3DH, c.Steady, env.Seconds)

	rows := [][]string{{"implementation", "workload", "µs/msg median", "[best]", "msgs/s", "allocs/msg", "KB/msg", "ratchetd ratio"}}
	var notes []string
	for _, r := range results {
		if r.NA != "" {
			rows = append(rows, []string{r.Impl, r.Workload, "n/a", "", "", "", "", ""})
			notes = append(notes, fmt.Sprintf("%s/%s n/a: %s", r.Impl, r.Workload, r.NA))
			continue
		}
		ratio := "—"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", r.Ratio)
		}
		rows = append(rows, []string{r.Impl, r.Workload, fmt.Sprintf("%.1f", r.MedianNs/1e3), fmt.Sprintf("[%.1f]", r.BestNs/1e3),
			rate(r.MsgsPerSec), fmt.Sprintf("%.0f", r.AllocsPerMsg), fmt.Sprintf("%.1f", r.BytesPerMsg/1024), ratio})
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	for k, row := range rows {
		if k > 1 && row[1] != rows[k-1][1] {
			fmt.Fprintln(w)
		}
		var b strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			if i < 2 {
				b.WriteString(cell + pad)
			} else {
				b.WriteString(pad + cell)
			}
			b.WriteString("  ")
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "ratchetd ratio = ratchetd's msgs/s ÷ the implementation's on the same workload (medians): above 1, ratchetd is faster.")
	fmt.Fprintln(w, "One msg = encrypt → protobuf wire → decrypt of 200 bytes, both ends on this goroutine; x3dh counts new sessions")
	fmt.Fprintln(w, "(bundle verify + X3DH on both sides + first message). allocs and KB are per msg, both ends together.")
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	fmt.Fprintln(w, "\nImplementations:")
	for _, im := range impls {
		fmt.Fprintf(w, "  %s: %s\n", im.Name, im.Summary)
	}
}

func rate(v float64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func environment(cfg peers.Config, took time.Duration) Env {
	env := Env{
		Date:       time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		GoVersion:  runtime.Version(),
		OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
		CPU:        cpuModel(),
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CGO:        "?",
		Modules:    map[string]string{},
		Config:     cfg,
		Seconds:    took.Seconds(),
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "CGO_ENABLED" {
				env.CGO = s.Value
			}
		}
		for _, d := range bi.Deps {
			env.Modules[d.Path] = d.Version
		}
	}
	return env
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
