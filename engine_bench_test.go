package ratchetd_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/transport"
)

// BenchmarkEngineThroughput measures messages per second through the whole
// engine (send: encrypt, commit, outbox, publish; receive: bundle check,
// decrypt, commit with the inbox, delivery), with Badger and SyncWrites on
// ("durable") and with the in-memory store ("memory"), in one run, so the
// two can be compared as a ratio. 16 conversations run concurrently, each a
// one-way burst (the symmetric ratchet).
//
// The "x4" variants send from four goroutines per conversation. They show
// that the bound is the receiving side: an installation takes one delivery
// at a time from its subscription (it acknowledges a delivery only once it
// committed it), and each decrypt waits for its commit.
func BenchmarkEngineThroughput(b *testing.B) {
	for _, senders := range []int{1, 4} {
		for _, durable := range []bool{true, false} {
			name := "memory"
			if durable {
				name = "durable"
			}
			if senders > 1 {
				name += "-x4"
			}
			b.Run(name, func(b *testing.B) { engineThroughput(b, durable, 16, senders, nil) })
		}
	}
}

// BenchmarkStatusSender is BenchmarkEngineThroughput's in-memory burst with
// senders that re-sign their bundle on every send, as Status clients do
// (status-compat.md §4.2), with the default BundleRecheckInterval
// ("recheck") and with every new signature verified ("verify-every"), in
// one run. verifies/msg is the receivers' bundle verifications per message.
func BenchmarkStatusSender(b *testing.B) {
	for _, recheck := range []time.Duration{0, -1} {
		name := "recheck"
		if recheck < 0 {
			name = "verify-every"
		}
		b.Run(name, func(b *testing.B) {
			engineThroughput(b, false, 16, 1, func(o *ratchetd.Options) {
				o.BundleResignInterval, o.BundleRecheckInterval = -1, recheck
			})
		})
	}
}

func engineThroughput(b *testing.B, durable bool, pairs, senders int, tweak func(*ratchetd.Options)) {
	mem := transport.NewMemory(transport.MemoryOptions{})
	defer mem.Close()
	var got atomic.Int64
	opts := ratchetd.Options{Transport: mem, Handler: func(ratchetd.Message) { got.Add(1) }}
	if durable {
		opts.Dir = b.TempDir()
	}
	if tweak != nil {
		tweak(&opts)
	}
	eng, err := ratchetd.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	type pair struct{ from, to *ratchetd.Account }
	ps := make([]pair, pairs)
	for i := range ps {
		a, _ := eng.CreateAccount()
		c, _ := eng.CreateAccount()
		introduce(b, a, c)
		introduce(b, c, a)
		ps[i] = pair{a, c}
		// Establish the session (X3DH) outside the measurement.
		if _, err := a.Send(c.Identity(), []byte("hi")); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Send(a.Identity(), []byte("hi")); err != nil {
			b.Fatal(err)
		}
	}
	for got.Load() < int64(2*pairs) {
		time.Sleep(time.Millisecond)
	}
	got.Store(0)
	verified0 := eng.Stats().BundlesVerified
	payload := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for i := range pairs * senders {
		p := ps[i%pairs]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := p.from.Send(p.to.Identity(), payload); err != nil {
					panic(fmt.Sprint("send: ", err))
				}
			}
		}()
	}
	wg.Wait()
	for got.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	st := eng.Stats()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(st.BundlesVerified-verified0)/float64(b.N), "verifies/msg")
	if st.Commits > 0 {
		b.ReportMetric(float64(st.CommittedWrites)/float64(st.Commits), "writes/commit")
	}
}
