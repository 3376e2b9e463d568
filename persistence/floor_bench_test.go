package persistence_test

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/persistence"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPingpongWrites is the store's share of a durable pingpong
// message, alone: what the engine writes per message (measured on the
// engine: two session records of 585 bytes under 143-byte keys, the
// sender's and the receiver's; an inbox record of 343 bytes under a 71-byte
// key; the deletion of the previous inbox record once acknowledged), in
// group commits of 17 messages (the bench's msgs_per_commit), on the
// default durable Badger (fsync, encryption at rest), over 128
// conversations. cpu-µs/msg is the process's CPU per message, Badger's
// background work (flushes, compaction) included: a floor under the
// engine's durability cost, to set against the crypto ceiling's per-message
// cost (ratchetd bench reports it).
func BenchmarkPingpongWrites(b *testing.B) {
	const perCommit, conversations = 17, 128
	st, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: b.TempDir(), CompactInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	record, inbox := make([]byte, 585), make([]byte, 343)
	sessionKey := func(i int) []byte {
		k := make([]byte, 143)
		copy(k, fmt.Sprintf("s/conversation-%d/side-%d", i/2, i%2))
		return k
	}
	inboxKey := func(n int) []byte {
		k := make([]byte, 71)
		copy(k, "n/installation/")
		binary.BigEndian.PutUint64(k[63:], uint64(n))
		return k
	}
	var ws []persistence.Write
	b.ResetTimer()
	start := cpuTime(b)
	for n := range b.N {
		c := n % conversations
		ws = append(ws,
			persistence.Write{Key: sessionKey(2 * c), Value: record},
			persistence.Write{Key: sessionKey(2*c + 1), Value: record},
			persistence.Write{Key: inboxKey(n), Value: inbox})
		if n > 0 {
			ws = append(ws, persistence.Write{Key: inboxKey(n - 1), Delete: true})
		}
		if len(ws) >= 4*perCommit || n == b.N-1 {
			if err := st.Commit(ws); err != nil {
				b.Fatal(err)
			}
			ws = ws[:0]
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-µs/msg")
}
