package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/cmd/ratchetd/serve"
	"github.com/ratchetd/ratchetd/persistence"
)

func newServeCmd() *cobra.Command {
	var (
		o       serve.Options
		metrics string
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node: host accounts from --dir, join the networked transport, serve the gRPC API",
		Long: `serve runs a ratchetd node. It hosts every account of its data directory, joins the
networked transport (protoactor-go remote over gRPC) on --listen with the nodes named by --peer,
and serves the API of messages/api.proto on --api for application code in any language:
accounts, send, a stream of received messages with acknowledgement, devices, bundles.
SIGTERM (or SIGINT) stops it gracefully: no new calls, running ones finish, state is committed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			s, err := serve.Start(o)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			if metrics != "" {
				srv := &http.Server{Addr: metrics, Handler: metricsHandler(s)}
				go srv.ListenAndServe()
				defer srv.Shutdown(context.Background())
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
			<-sig
			fmt.Fprintln(cmd.OutOrStdout(), "ratchetd: stopping")
			s.Stop()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", persistence.DefaultDir, "data directory (Badger)")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:7400", "host:port of this node on the networked transport")
	f.StringSliceVar(&o.Peers, "peer", nil, "host:port of another node (repeatable)")
	f.StringVar(&o.API, "api", "127.0.0.1:7401", "host:port of the gRPC API")
	f.DurationVar(&o.PeerExpiry, "peer-expiry", 0, "stop waiting for a peer node silent this long (0: until restart); a node gone for good then no longer holds up its topics, but a device of a multi-device user on it misses what another device took")
	f.DurationVar(&o.WarmUp, "warm-up", 0, "after start, hold confirmed sends this long, so that every live peer node has greeted this one first and a device whose node answers last does not miss them (0: 3 s; negative: no hold)")
	f.StringVar(&metrics, "metrics-addr", "", "serve Prometheus metrics on this host:port")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}

// metricsHandler serves the engine's and the transport's counters in the
// Prometheus text format.
func metricsHandler(s *serve.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		st := s.Engine().Stats()
		for _, m := range []struct {
			name string
			v    int64
		}{
			{"ratchetd_messages_published_total", st.Published},
			{"ratchetd_messages_decrypted_total", st.Decrypted},
			{"ratchetd_duplicates_total", st.Duplicates},
			{"ratchetd_decrypt_failures_total", st.DecryptFailures},
			{"ratchetd_malformed_total", st.Malformed},
			{"ratchetd_bad_bundles_total", st.BadBundles},
			{"ratchetd_bundles_verified_total", st.BundlesVerified},
			{"ratchetd_bundles_unchanged_total", st.BundlesUnchanged},
			{"ratchetd_sessions_active", st.SessionsActive},
			{"ratchetd_passivations_total", st.Passivations},
			{"ratchetd_commits_total", st.Commits},
			{"ratchetd_committed_writes_total", st.CommittedWrites},
			{"ratchetd_outbox_resent_total", st.OutboxResent},
			{"ratchetd_actor_failures_total", st.ActorFailures},
			{"ratchetd_mailbox_depth", st.MailboxDepth},
		} {
			fmt.Fprintf(w, "%s %d\n", m.name, m.v)
		}
		histogram(w, "ratchetd_commit_batch_writes", st.CommitBatch[:], ratchetd.CommitBatchBuckets[:], float64(st.CommittedWrites))
		histogram(w, "ratchetd_commit_latency_seconds", st.CommitLatency[:], ratchetd.CommitLatencyBuckets[:], float64(st.CommitNanos)/1e9)
		for reason, n := range s.NodeStats().Dropped {
			fmt.Fprintf(w, "ratchetd_transport_dropped_total{reason=%q} %d\n", reason, n)
		}
	})
}

// histogram writes one of the engine's commit histograms (per-bucket
// counts, the last above every bound) in the Prometheus text format.
func histogram(w io.Writer, name string, counts []int64, bounds []float64, sum float64) {
	fmt.Fprintf(w, "# TYPE %s histogram\n", name)
	var n int64
	for i, b := range bounds {
		n += counts[i]
		fmt.Fprintf(w, "%s_bucket{le=\"%g\"} %d\n", name, b, n)
	}
	n += counts[len(bounds)]
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %g\n%s_count %d\n", name, n, name, sum, name, n)
}
