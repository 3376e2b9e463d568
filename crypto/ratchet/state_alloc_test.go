package ratchet

import (
	"testing"

	"github.com/ratchetd/ratchetd/crypto/keys"
)

// A snapshot copies its keys into one buffer: its allocations do not grow
// with the previous chains (the struct, the buffer, and two for the chain
// ends when there are some). (Found by review: the buffer was sized for
// 32-byte chain keys, which are 33-byte ratchet public keys, and grew.)
func TestSnapshotAllocations(t *testing.T) {
	var s State
	s.DHr[0] = 2 // a received ratchet key: DhRecv is set
	for _, n := range []int{0, 1, 5} {
		s.Previous = make([]ChainEnd, n)
		for i := range s.Previous {
			s.Previous[i] = ChainEnd{Key: keys.PublicKey{2, byte(i)}, Length: uint32(i)}
		}
		want := 2.0
		if n > 0 {
			want = 4
		}
		if got := testing.AllocsPerRun(100, func() { _ = s.Snapshot() }); got != want {
			t.Errorf("%d previous chains: %v allocations, want %v", n, got, want)
		}
	}
}
