package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/loadgen"
	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/report"
)

func newBenchCmd() *cobra.Command {
	var (
		cfg         loadgen.Config
		asJSON      bool
		reportFile  string
		metricsAddr string
		cpuProfile  string
		traceFile   string
		memProfile  string
	)
	cmd := &cobra.Command{
		Use:   "bench [SCENARIO]",
		Short: "Load generator: drive the engine and measure throughput, latency, CPU and memory",
		Long: `bench drives a real engine (actors, the Badger or in-memory store, the asynchronous
in-memory transport) through the embedding API and measures delivered messages per
second, send-to-receipt latency (p50/p90/p99/p99.9), CPU seconds, allocations, peak RSS
and the engine's group commits. In the same run it measures a straight-line loop of the
same crypto primitives with no actors and no persistence (the ceiling: at most one loop per CPU,
each on its own locked thread), half of --ceiling just before the measured phase and
half after it, and reports the engine as a fraction of their mean.

Scenarios:
  burst     one side sends long runs (--senders goroutines, at most 128 in flight),
            the other decrypts: the symmetric ratchet               (default 16 conversations)
  pingpong  strict alternation: a DH ratchet step per message       (default 128 conversations)
  x3dh      a new session per message: each message comes from a fresh account
                                                                    (default 32 workers)
  fanout    group sends from a 3-device identity to 4 members with 2 devices each:
            16 deliveries per group message                         (default 8 groups)
  sessions  one hub with --sessions conversations, 1 % of them active: memory per
            conversation                                            (default 1000)

The run ends after --duration or once --messages deliveries arrived, whichever comes
first; messages still in flight are then awaited. On a terminal a progress line shows
the rate, p99, errors and the time left; it stays quiet when standard output is not a
terminal. Exit status 1 when a message was lost or failed.`,
		Example: `  ratchetd bench burst --duration 5s
  ratchetd bench pingpong --durable=false --json
  ratchetd bench --scenario sessions --sessions 5000 --report sessions.html
  ratchetd bench fanout --metrics-addr 127.0.0.1:9464`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if cmd.Flags().Changed("scenario") && !strings.EqualFold(args[0], cfg.Scenario) {
					return usageError{fmt.Errorf("bench: scenario given twice: %q and --scenario %q", args[0], cfg.Scenario)}
				}
				cfg.Scenario = args[0]
			}
			if !cmd.Flags().Changed("sessions") {
				cfg.Sessions = 0 // the scenario's default
			}
			out := cmd.OutOrStdout()
			if isTerminal(out) {
				cfg.Progress = out
			}
			if metricsAddr != "" {
				mon := loadgen.NewMonitor()
				stop, addr, err := serveMetrics(metricsAddr, mon.Handler())
				if err != nil {
					return err
				}
				defer stop()
				fmt.Fprintf(cmd.ErrOrStderr(), "metrics on http://%s/metrics\n", addr)
				cfg.Monitor = mon
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("bench: cpu profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("bench: cpu profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			if traceFile != "" {
				f, err := os.Create(traceFile)
				if err != nil {
					return fmt.Errorf("bench: trace: %w", err)
				}
				defer f.Close()
				if err := trace.Start(f); err != nil {
					return fmt.Errorf("bench: trace: %w", err)
				}
				defer trace.Stop()
			}
			ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer cancel()
			res, err := loadgen.Run(ctx, cfg)
			if err != nil {
				return err
			}
			if memProfile != "" {
				// Allocations of the whole run (go tool pprof
				// -sample_index=alloc_space), not only what is live.
				if err := writeHeapProfile(memProfile); err != nil {
					return err
				}
			}
			if reportFile != "" {
				if err := writeReport(reportFile, res); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "report written to %s\n", reportFile)
			}
			if asJSON {
				enc := json.NewEncoder(out)
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else if err := res.WriteTable(out); err != nil {
				return err
			}
			if res.Errors > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("bench: %d errors (%s)", res.Errors, strings.Join(res.ErrorSamples, "; "))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Scenario, "scenario", loadgen.Burst, "one of "+strings.Join(loadgen.Scenarios, ", ")+" (or as the argument)")
	f.IntVar(&cfg.Sessions, "sessions", 0, "conversations (the scenario's default when not set)")
	f.IntVar(&cfg.Senders, "senders", loadgen.DefaultSenders, "concurrent senders per burst conversation")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the measured phase (0: until --messages)")
	f.IntVar(&cfg.Messages, "messages", 0, "stop after this many deliveries (0: until --duration)")
	f.IntVar(&cfg.Payload, "payload", 200, fmt.Sprintf("payload bytes per message (at least %d)", loadgen.MinPayload))
	f.BoolVar(&cfg.Durable, "durable", true, "keep the state in Badger (--dir or a temporary directory); false: the in-memory store")
	f.BoolVar(&cfg.NoSync, "no-sync", false, "with --durable: Badger's SyncWrites off (safe against a process crash, not a power loss), to measure what fsync costs")
	f.DurationVar(&cfg.CommitDelay, "commit-delay", 0, "while the store is busy, how long a group commit waits for company (0: the engine's default, 1ms; negative: never)")
	f.StringVar(&cfg.Dir, "dir", "", "Badger directory of a durable run, new or empty (default: a temporary one, removed)")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed of the payload bytes and of the choice of active conversations")
	f.DurationVar(&cfg.Ceiling, "ceiling", 2*time.Second, "how long to measure the crypto-only ceiling, half just before the measured phase and half after it (0: skip)")
	f.BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	f.StringVar(&reportFile, "report", "", "write a self-contained HTML report with charts to this file")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (go tool pprof) to this file")
	f.StringVar(&traceFile, "trace", "", "write an execution trace of the whole run (go tool trace: scheduling, blocking, syscalls) to this file")
	f.StringVar(&memProfile, "memprofile", "", "write a heap profile (allocations of the whole run, and what is live at its end) to this file")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address while the load runs (e.g. 127.0.0.1:9464)")
	return cmd
}

// isTerminal reports whether w is a terminal (the progress line is shown
// only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// serveMetrics listens on addr and serves h at /metrics until stop.
func serveMetrics(addr string, h http.Handler) (stop func(), bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("bench: metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "ratchetd: metrics server:", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, ln.Addr().String(), nil
}

func writeReport(path string, res *loadgen.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: report: %w", err)
	}
	if err := report.Write(f, res); err != nil {
		f.Close()
		return fmt.Errorf("bench: report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: report: %w", err)
	}
	return nil
}

// writeHeapProfile writes the heap profile to path (after a GC, so that
// the in-use figures are what the run left live).
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: memory profile: %w", err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: memory profile: %w", err)
	}
	return f.Close()
}
