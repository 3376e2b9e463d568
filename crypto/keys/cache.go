package keys

import "sync"

// validKeys remembers public keys already checked to be on the curve, so a
// key seen on every message of a chain (a ratchet key, a bundle id, an
// identity) is decompressed once, not on every parse (~7 µs with
// libsecp256k1). A key enters only after a successful check; the cache only
// ever answers "valid", so a miss just means checking again. It is bounded:
// a full shard is emptied.
var validKeys = newKeyCache(64, 2048)

type keyCache struct {
	shards []keyShard
	max    int
}

type keyShard struct {
	mu   sync.Mutex
	keys map[PublicKey]struct{}
}

func newKeyCache(shards, perShard int) *keyCache {
	c := &keyCache{shards: make([]keyShard, shards), max: perShard}
	for i := range c.shards {
		c.shards[i].keys = make(map[PublicKey]struct{})
	}
	return c
}

func (c *keyCache) shard(pk PublicKey) *keyShard {
	// The x-coordinate is uniformly distributed: any byte picks a shard.
	return &c.shards[int(pk[7])%len(c.shards)]
}

func (c *keyCache) has(pk PublicKey) bool {
	s := c.shard(pk)
	s.mu.Lock()
	_, ok := s.keys[pk]
	s.mu.Unlock()
	return ok
}

func (c *keyCache) add(pk PublicKey) {
	s := c.shard(pk)
	s.mu.Lock()
	if len(s.keys) >= c.max {
		clear(s.keys)
	}
	s.keys[pk] = struct{}{}
	s.mu.Unlock()
}
