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

// publicKeys remembers the public key computed for a private key, so that a
// pair checked again (a bundle signed with the identity key, a ratchet
// state restored from its snapshot, an installation loaded with its
// identity) costs a SHA-256 instead of a scalar multiplication (~40 µs with
// libsecp256k1, whose base-point table go-ethereum does not expose). It is
// keyed by a domain-separated SHA-256 of the private key, never by the key
// itself; it holds only what Public computed; a full shard is emptied.
var publicKeys = newPublicCache(64, 256)

type publicCache struct {
	shards []publicShard
	max    int
}

type publicShard struct {
	mu   sync.Mutex
	keys map[[32]byte]PublicKey
}

func newPublicCache(shards, perShard int) *publicCache {
	c := &publicCache{shards: make([]publicShard, shards), max: perShard}
	for i := range c.shards {
		c.shards[i].keys = make(map[[32]byte]PublicKey)
	}
	return c
}

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

func (c *publicCache) shard(d *[32]byte) *publicShard {
	return &c.shards[int(d[0])%len(c.shards)]
}

func (c *publicCache) get(d *[32]byte) (PublicKey, bool) {
	s := c.shard(d)
	s.mu.Lock()
	pk, ok := s.keys[*d]
	s.mu.Unlock()
	return pk, ok
}

func (c *publicCache) add(d *[32]byte, pk PublicKey) {
	s := c.shard(d)
	s.mu.Lock()
	if len(s.keys) >= c.max {
		clear(s.keys)
	}
	s.keys[*d] = pk
	s.mu.Unlock()
}
