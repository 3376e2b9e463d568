package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/ratchetd/ratchetd/cmd/ratchetd/chaos"
)

func newChaosCmd() *cobra.Command {
	var (
		dir     string
		runs    int
		seed    uint64
		minRun  time.Duration
		maxRun  time.Duration
		asJSON  bool
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Crash harness: kill a two-sided conversation with SIGKILL and verify nothing was lost",
		Long: `chaos runs a two-sided conversation against a data directory in a child process,
kills the child with SIGKILL at random moments (seeded), restarts it, and after all runs
verifies from both sides: messages accepted by Send and acknowledged as sent, messages lost,
message keys reused (same ratchet key and counter with different ciphertext), messages left
undecryptable. The exit status is non-zero when an invariant is broken.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if dir == "" {
				if dir, err = os.MkdirTemp("", "ratchetd-chaos-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			o := chaos.Options{
				Dir: dir, Runs: runs, Seed: seed, MinRun: minRun, MaxRun: maxRun,
				Child: func(args ...string) *exec.Cmd { return exec.Command(exe, append([]string{"chaos-child"}, args...)...) },
			}
			if verbose {
				o.Log = func(f string, a ...any) { fmt.Fprintf(cmd.ErrOrStderr(), f+"\n", a...) }
			}
			res, err := chaos.Run(o)
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.Marshal(res)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "runs %d, kills %d: sent %d, delivered %d (%d redelivered duplicates), lost %d, key reuse %d, undecryptable %d, envelopes %d\n",
					res.Runs, res.Kills, res.Sent, res.Delivered, res.Duplicates, res.Lost, res.KeyReuse, res.Undecryptable, res.Envelopes)
			}
			if !res.OK() {
				return &exitError{code: 1, msg: "an invariant was broken"}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "data directory (emptied first; a temporary one by default)")
	f.IntVar(&runs, "runs", 20, "number of SIGKILLs")
	f.Uint64Var(&seed, "seed", 1, "seed of the kill schedule and of the load")
	f.DurationVar(&minRun, "min-run", 50*time.Millisecond, "shortest life of a child before its kill")
	f.DurationVar(&maxRun, "max-run", 450*time.Millisecond, "longest life of a child before its kill")
	f.BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	f.BoolVarP(&verbose, "verbose", "v", false, "log each run")
	return cmd
}

// newChaosChildCmd is the child process of chaos (hidden).
func newChaosChildCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "chaos-child",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return chaos.Child(args)
		},
	}
}
