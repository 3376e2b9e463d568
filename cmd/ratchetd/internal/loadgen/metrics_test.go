package loadgen

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
)

// While a run is attached, a scrape shows the engine's counters and the
// load generator's own, in the Prometheus text format.
func TestMonitor(t *testing.T) {
	eng, err := ratchetd.Open(ratchetd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if _, err := eng.CreateAccount(); err != nil { // one group commit
		t.Fatal(err)
	}
	r := &run{cfg: Config{Scenario: Burst}, eng: eng, probe: newProbe(64, 1), stop: make(chan struct{})}
	r.probe.sent.Add(3)
	r.probe.expected.Add(3)
	r.probe.hist.Record(2 * time.Millisecond)
	r.probe.delivered.Add(1)
	r.conversations.Add(2)
	m := NewMonitor()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	if body := scrape(t, srv.URL); strings.Contains(body, "ratchetd_bench_running") {
		t.Fatalf("metrics of a run before it was attached")
	}
	m.attach(r)
	body := scrape(t, srv.URL)
	for _, want := range []string{
		`ratchetd_bench_running{durable="false",scenario="burst"} 1`,
		"ratchetd_bench_messages_sent_total 3",
		"ratchetd_messages_encrypted_total 3",
		"ratchetd_bench_messages_delivered_total 1",
		"ratchetd_bench_conversations 2",
		`ratchetd_bench_latency_seconds_bucket{le="0.002"} 1`,
		"ratchetd_messages_decrypted_total 0",
		`ratchetd_failures_total{reason="decrypt_failure"} 0`,
		"ratchetd_engine_x3dh_active_total 0",
		"ratchetd_engine_mailbox_depth ",
		`ratchetd_commit_batch_writes_bucket{le="+Inf"} `,
		"ratchetd_commit_latency_seconds_count ",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(body, "ratchetd_commit_latency_seconds_count 0\n") {
		t.Errorf("the account's commit is not in the commit histogram")
	}
	m.detach(r)
	if body := scrape(t, srv.URL); strings.Contains(body, "ratchetd_bench_running") {
		t.Fatalf("metrics of a run after it was detached")
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{
		"DecryptFailures": "decrypt_failures", "X3DHActive": "x3dh_active", "MaxBatch": "max_batch",
		"Published": "published", "BadEnvelopes": "bad_envelopes", "OutboxResent": "outbox_resent",
	} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}
