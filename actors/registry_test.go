package actors

import (
	"crypto/rand"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// TestRegistryLRU: the registry keeps at most DeviceCacheSize identities in
// memory and reads an evicted one back from the store; a corrupt record is
// skipped.
func TestRegistryLRU(t *testing.T) {
	store := persistence.NewMemory()
	cfg := Config{DeviceCacheSize: 2}.withDefaults()
	d := &deps{cfg: cfg, store: store, log: cfg.Logger, stats: &stats{}}
	r := newRegistry(d, "local")
	var ids []keys.PublicKey
	for range 3 {
		id, _ := keys.GenerateKey(rand.Reader)
		spk, _ := keys.GenerateKey(rand.Reader)
		rec := &messages.DeviceRecord{Identity: id.Public[:], InstallationId: "dev", SignedPreKey: spk.Public[:], Enabled: true}
		v, _ := proto.Marshal(rec)
		store.Commit([]persistence.Write{{Key: persistence.DeviceKey("local", id.Public[:], "dev"), Value: v}})
		ids = append(ids, id.Public)
	}
	// A corrupt record of the first identity.
	store.Commit([]persistence.Write{{Key: persistence.DeviceKey("local", ids[0][:], "bad"), Value: []byte{0xff, 0xff}}})
	for _, id := range ids {
		if devs := r.of(id); len(devs) != 1 || devs["dev"] == nil {
			t.Fatalf("identity %s: %d devices", id, len(devs))
		}
	}
	if r.lru.Len() != 2 || d.stats.corrupt.Load() != 1 {
		t.Fatalf("%d cached, %d corrupt", r.lru.Len(), d.stats.corrupt.Load())
	}
	if _, cached := r.byID[ids[0]]; cached {
		t.Fatal("the least recently used identity is still cached")
	}
	if devs := r.of(ids[0]); len(devs) != 1 {
		t.Fatalf("evicted identity read back with %d devices", len(devs))
	}
	if all := r.all(); len(all) != 3 {
		t.Fatalf("all: %d devices", len(all))
	}
}
