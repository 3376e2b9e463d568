package serve

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/messages"
)

// BenchmarkTwoProcesses measures messages per second from an account on one
// `serve` process to an account on another over loopback (the networked
// transport), against the same load with both accounts in one process, in
// one run: the ratio is the cost of crossing processes. Both go through the
// gRPC API, with durable state.
//
//	go test -run '^$' -bench TwoProcesses -benchtime 2000x ./cmd/ratchetd/serve
func BenchmarkTwoProcesses(b *testing.B) {
	for _, split := range []bool{true, false} {
		name := "one-process"
		if split {
			name = "two-processes"
		}
		b.Run(name, func(b *testing.B) { twoProcesses(b, split) })
	}
}

func twoProcesses(b *testing.B, split bool) {
	base := b.TempDir()
	a := &proc{t: b, dir: filepath.Join(base, "a"), listen: freePort(b), api: freePort(b)}
	procs := []*proc{a}
	bp := a
	if split {
		bp = &proc{t: b, dir: filepath.Join(base, "b"), listen: freePort(b), api: freePort(b), peers: []string{a.listen}}
		a.peers = []string{bp.listen}
		procs = append(procs, bp)
	}
	for _, p := range procs {
		p.start()
	}
	defer func() {
		for _, p := range procs {
			p.term()
		}
	}()
	ctx := context.Background()
	alice := must(a.c.CreateAccount(ctx, &messages.CreateAccountRequest{}))
	bob := must(bp.c.CreateAccount(ctx, &messages.CreateAccountRequest{}))
	for _, x := range [][4]any{{a, alice, bp, bob}, {bp, bob, a, alice}} {
		from, fa, to, ta := x[0].(*proc), x[1].(*messages.AccountInfo), x[2].(*proc), x[3].(*messages.AccountInfo)
		s := must(from.c.ExportBundle(ctx, &messages.AccountRef{InstallationId: fa.InstallationId}))
		must(to.c.ImportBundle(ctx, &messages.ImportBundleRequest{InstallationId: ta.InstallationId, Bundle: s.Bundle}))
	}
	if split {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := must(a.c.NodeStatus(ctx, &messages.NodeStatusRequest{}))
			if st.PeerTopics[bp.listen] >= 2 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("nodes did not meet")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stream := must(bp.c.Receive(ctx, &messages.ReceiveRequest{InstallationId: bob.InstallationId}))
	got := make(chan struct{}, 1024)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			bp.c.Ack(ctx, &messages.AckRequest{InstallationId: bob.InstallationId, Id: m.Id})
			got <- struct{}{}
		}
	}()
	payload := make([]byte, 200)
	// Warm up: X3DH.
	must(a.c.Send(ctx, &messages.SendRequest{InstallationId: alice.InstallationId, PeerIdentity: bob.Identity, Payload: payload}))
	<-got
	b.ResetTimer()
	start := time.Now()
	const window = 64 // sends in flight
	sem := make(chan struct{}, window)
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < b.N; i++ {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				if _, err := a.c.Send(ctx, &messages.SendRequest{InstallationId: alice.InstallationId, PeerIdentity: bob.Identity, Payload: payload}); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}()
		}
	}()
	for i := 0; i < b.N; i++ {
		select {
		case <-got:
		case err := <-errc:
			b.Fatal(err)
		case <-time.After(30 * time.Second):
			b.Fatalf("stalled after %d of %d", i, b.N)
		}
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}
