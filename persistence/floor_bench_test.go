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
// message, alone: what the engine writes per message, in group commits of
// 13 messages (the bench's msgs_per_commit), on the default durable Badger
// (fsync, encryption at rest), over 128 conversations. Measured on the
// engine: the receiver's session record under a 143-byte key (the sender's
// send is covered by a reserved key and writes nothing), and
//
//   - inline: the message kept in that record (840 bytes with one message
//     of 200 bytes: what pingpong writes);
//   - inbox: a 585-byte record, an inbox record of 343 bytes under a 71-byte
//     key, and the deletion of the previous inbox record once acknowledged
//     (InlineInboxBytes negative; the engine's writes before it kept
//     messages in their records).
//
// cpu-µs/msg is the process's CPU per message, Badger's background work
// (flushes, compaction) included: a floor under the engine's durability
// cost, to set against the crypto ceiling's per-message cost (ratchetd
// bench reports it).
func BenchmarkPingpongWrites(b *testing.B) {
	const perCommit, conversations = 13, 128
	sessionKey := func(c int) []byte {
		k := make([]byte, 143)
		copy(k, fmt.Sprintf("s/conversation-%d", c))
		return k
	}
	inboxKey := func(n int) []byte {
		k := make([]byte, 71)
		copy(k, "n/installation/")
		binary.BigEndian.PutUint64(k[63:], uint64(n))
		return k
	}
	for _, inline := range []bool{true, false} {
		name := "inbox"
		if inline {
			name = "inline"
		}
		b.Run(name, func(b *testing.B) {
			st, err := persistence.OpenBadger(persistence.BadgerOptions{Dir: b.TempDir(), CompactInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			record, inbox := make([]byte, 585), make([]byte, 343)
			if inline {
				record = make([]byte, 840)
			}
			var ws []persistence.Write
			b.ResetTimer()
			start := cpuTime(b)
			for n := range b.N {
				ws = append(ws, persistence.Write{Key: sessionKey(n % conversations), Value: record})
				if !inline {
					ws = append(ws, persistence.Write{Key: inboxKey(n), Value: inbox})
					if n > 0 {
						ws = append(ws, persistence.Write{Key: inboxKey(n - 1), Delete: true})
					}
				}
				if (n+1)%perCommit == 0 || n == b.N-1 {
					if err := st.Commit(ws); err != nil {
						b.Fatal(err)
					}
					ws = ws[:0]
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}
