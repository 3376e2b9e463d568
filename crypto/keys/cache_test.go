package keys

import (
	"bytes"
	"testing"

	gethcrypto "github.com/ethereum/go-ethereum/crypto"
)

// TestPublicCache: a remembered public key is the one the curve gives, for
// keys seen before and after their shard was emptied; the cache stays
// within its bound.
func TestPublicCache(t *testing.T) {
	c := publicKeys
	for i := range 3 * c.max * len(c.shards) / 2 {
		var sk PrivateKey
		sk[0], sk[31] = 1, byte(i)
		sk[30], sk[29] = byte(i>>8), byte(i>>16)
		for range 2 { // computed, then remembered
			pk, err := sk.Public()
			if err != nil {
				t.Fatal(err)
			}
			e, err := gethcrypto.ToECDSA(sk[:])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pk[:], gethcrypto.CompressPubkey(&e.PublicKey)) {
				t.Fatalf("key %d: wrong public key", i)
			}
		}
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n := len(s.m)
		s.mu.Unlock()
		if n > c.max {
			t.Fatalf("shard %d holds %d keys, bound %d", i, n, c.max)
		}
	}
}
