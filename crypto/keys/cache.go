package keys

import (
	"crypto/sha256"
	"sync"
)

// validKeys remembers public keys already checked to be on the curve, so a
// key seen on every message of a chain (a ratchet key, a bundle id, an
// identity) is decompressed once, not on every parse (~7 µs with
// libsecp256k1). A key enters only after a successful check; the cache only
// ever answers "valid", so a miss just means checking again. It is bounded:
// a full shard is emptied.
var validKeys = newCache[PublicKey, struct{}](64, 2048, func(pk PublicKey) byte {
	// The x-coordinate is uniformly distributed: any byte picks a shard.
	return pk[7]
})

// publicKeys remembers the public key computed for a private key, so that a
// pair checked again (a bundle signed with the identity key, a ratchet
// state restored from its snapshot, an installation loaded with its
// identity) costs a SHA-256 instead of a scalar multiplication (~40 µs with
// libsecp256k1, whose base-point table go-ethereum does not expose). It is
// keyed by a domain-separated SHA-256 of the private key, never by the key
// itself; it holds only what Public computed; a full shard is emptied.
var publicKeys = newCache[[32]byte, PublicKey](64, 256, func(d [32]byte) byte { return d[0] })

// secretDigest is the cache's name for sk.
func secretDigest(sk *PrivateKey) [32]byte {
	const domain = "ratchetd/keys public-key cache\x00"
	var buf [len(domain) + PrivateKeySize]byte
	copy(buf[:], domain)
	copy(buf[len(domain):], sk[:])
	d := sha256.Sum256(buf[:])
	clear(buf[:])
	return d
}

// cache is a bounded concurrent map in shards, each emptied when full: a
// miss only means computing again.
type cache[K comparable, V any] struct {
	shards  []cacheShard[K, V]
	max     int
	shardOf func(K) byte // a uniformly distributed byte of the key
}

type cacheShard[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

func newCache[K comparable, V any](shards, perShard int, shardOf func(K) byte) *cache[K, V] {
	c := &cache[K, V]{shards: make([]cacheShard[K, V], shards), max: perShard, shardOf: shardOf}
	for i := range c.shards {
		c.shards[i].m = make(map[K]V)
	}
	return c
}

func (c *cache[K, V]) shard(k K) *cacheShard[K, V] {
	return &c.shards[int(c.shardOf(k))%len(c.shards)]
}

func (c *cache[K, V]) get(k K) (V, bool) {
	s := c.shard(k)
	s.mu.Lock()
	v, ok := s.m[k]
	s.mu.Unlock()
	return v, ok
}

func (c *cache[K, V]) add(k K, v V) {
	s := c.shard(k)
	s.mu.Lock()
	if len(s.m) >= c.max {
		clear(s.m)
	}
	s.m[k] = v
	s.mu.Unlock()
}
