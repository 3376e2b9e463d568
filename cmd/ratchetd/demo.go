package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/persistence"
)

// demoSummary is what `demo --json` prints.
type demoSummary struct {
	Identities        int    `json:"identities"`
	Installations     int    `json:"installations"`
	Sessions          int    `json:"sessions"`
	Sent              int    `json:"sent"`      // sends, re-sends included
	Delivered         int    `json:"delivered"` // addressed deliveries that arrived
	Expected          int    `json:"expected"`  // addressed deliveries
	DecryptFailures   int64  `json:"decrypt_failures"`
	DuplicatesDropped int64  `json:"duplicates_dropped"`
	Restarts          int    `json:"restarts"`
	LostInTransit     int    `json:"lost_in_transit"`
	Resent            int    `json:"resent"`
	Seed              uint64 `json:"seed"`
	Dir               string `json:"dir"`
}

func newDemoCmd() *cobra.Command {
	var (
		dir     string
		seed    uint64
		asJSON  bool
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "A scripted multi-device conversation on the embedded default, with a transcript",
		Long: `demo runs the engine the way an application embeds it — Badger in --dir, every device
an actor — and plays a conversation through its flows, printing what happens on the wire:

  1. three identities; alice has three devices, which pair with each other
  2. X3DH from a scanned bundle, the confirmation that ends the X3DH headers
  3. a conversation over a network that reorders, duplicates and loses envelopes;
     what was lost is found by the application and re-sent (the engine does not
     retransmit), and the transcript says which
  4. a concurrent initiation: both sides run X3DH at once and converge
  5. an engine restart in the middle (Close, then Open on the same directory)
  6. a signed-prekey rotation and the fresh X3DH it causes
  7. a new device of bob that alice does not know, included after its automatic answer

The transport is the in-memory one in manual mode with a fault schedule seeded by
--seed, and every key is drawn from a stream seeded by it too, so a run is
reproducible (and its demo keys are not secret). The directory is emptied at the start
of every run: the demo refuses a non-empty directory it did not create, and a second
demo on the same directory while one runs fails (the directory is locked).

Exit status 1 when an addressed message was not delivered or a decrypt failed.`,
		Example: `  ratchetd demo
  ratchetd demo --dir /tmp/demo --seed 7 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			transcript := cmd.OutOrStdout()
			if asJSON {
				transcript = cmd.ErrOrStderr()
			}
			logger := slog.New(slog.DiscardHandler)
			if verbose {
				logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			sum, err := runDemo(transcript, dir, seed, logger)
			if err != nil {
				return err
			}
			if asJSON {
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(sum); err != nil {
					return err
				}
			} else {
				writeDemoSummary(transcript, sum)
			}
			if sum.Delivered < sum.Expected || sum.DecryptFailures > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("demo: %d of %d addressed deliveries arrived, %d decrypt failures",
					sum.Delivered, sum.Expected, sum.DecryptFailures)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", persistence.DefaultDir, "data directory (Badger); emptied at the start of each run")
	f.Uint64Var(&seed, "seed", 1, "seed of the network's fault schedule and of the demo's keys")
	f.BoolVar(&asJSON, "json", false, "print the summary as one JSON object (the transcript goes to standard error)")
	f.BoolVar(&verbose, "verbose", false, "log the engine's debug lines to standard error")
	return cmd
}

func runDemo(out io.Writer, dir string, seed uint64, logger *slog.Logger) (demoSummary, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reused, err := prepareDemoDir(dir)
	if err != nil {
		return demoSummary{}, err
	}
	w := newWorld(out, dir, seed, logger)
	defer w.close()
	if err := w.open(); err != nil {
		return demoSummary{}, err
	}
	start := "a new directory"
	if reused {
		start = "emptied from the previous run"
	}
	w.printf("ratchetd demo: seed %d, data in %s (%s)", seed, dir, start)
	w.printf("the network reorders and duplicates envelopes at random (seeded); keys come from a seeded stream, so this transcript is reproducible")
	if err := w.script(); err != nil {
		return demoSummary{}, err
	}
	sessions, err := w.countSessions()
	if err != nil {
		return demoSummary{}, err
	}
	st := w.stats()
	delivered, expected := w.tally()
	return demoSummary{
		Identities: len(w.identities), Installations: len(w.order), Sessions: sessions,
		Sent: w.sends(), Delivered: delivered, Expected: expected,
		DecryptFailures: st.DecryptFailures, DuplicatesDropped: st.Duplicates, Restarts: w.restarts,
		LostInTransit: len(w.lost), Resent: w.resent, Seed: seed, Dir: dir,
	}, nil
}

// countSessions counts the ratchet sessions every device holds, with
// every identity it knows (its own paired devices included).
func (w *world) countSessions() (int, error) {
	n := 0
	for _, name := range w.order {
		a := w.devices[name]
		devs, err := a.Devices(keys.PublicKey{})
		if err != nil {
			return 0, fmt.Errorf("demo: devices of %s: %w", name, err)
		}
		peers := map[keys.PublicKey]bool{}
		for _, d := range devs {
			peers[d.Identity] = true
		}
		for p := range peers {
			r, err := w.eng.Actors().Sessions(a.InstallationID(), p)
			if err != nil {
				return 0, fmt.Errorf("demo: sessions of %s: %w", name, err)
			}
			n += len(r.Sessions)
		}
	}
	return n, nil
}

func writeDemoSummary(w io.Writer, s demoSummary) {
	fmt.Fprintf(w, "\nsummary: %d identities, %d installations, %d sessions; %d sent (%d re-sent after %d losses), %d of %d deliveries;\n",
		s.Identities, s.Installations, s.Sessions, s.Sent, s.Resent, s.LostInTransit, s.Delivered, s.Expected)
	fmt.Fprintf(w, "         %d decrypt failures, %d duplicates dropped by the engine, %d restart(s)\n", s.DecryptFailures, s.DuplicatesDropped, s.Restarts)
}
