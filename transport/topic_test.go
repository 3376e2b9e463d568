package transport_test

import (
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/transport"
)

// PartitionedTopic is "contact-discovery-" + (X mod 5000) (status-compat.md
// §12): against math/big's reduction for random keys and the extremes.
func TestPartitionedTopicIsXMod5000(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 5000))
	check := func(id keys.PublicKey) {
		x := new(big.Int).SetBytes(id[1:])
		want := "contact-discovery-" + new(big.Int).Mod(x, big.NewInt(transport.PartitionedTopicCount)).String()
		if got := transport.PartitionedTopic(id); got != want {
			t.Fatalf("%x: %s, want %s", id, got, want)
		}
	}
	var id keys.PublicKey
	check(id)
	for i := range id {
		id[i] = 0xff
	}
	check(id)
	for range 2000 {
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		check(id)
	}
}
