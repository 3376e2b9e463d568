package actors

import (
	"container/list"
	"fmt"
	"log/slog"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// registry is an installation's device registry (peers' installations and
// our own paired ones, status-compat.md §4.5, §9). It is loaded per
// identity from the store when first needed and kept in a bounded
// least-recently-used cache, so memory follows the identities in use, not
// every contact ever seen.
//
// Writes go to the store through the Committer without waiting; an identity
// is evicted only when it is the least recently used of DeviceCacheSize, long
// after its writes were committed.
type registry struct {
	store persistence.Store
	local string
	log   *slog.Logger
	stats *stats
	max   int
	known func(local string, identity []byte, kind byte) bool // deps.knownPeer

	byID map[keys.PublicKey]*list.Element // -> *registryEntry
	lru  *list.List                       // front: most recently used
}

type registryEntry struct {
	identity keys.PublicKey
	devices  map[string]*messages.DeviceRecord // by installation id
}

func newRegistry(d *deps, local string) *registry {
	return &registry{store: d.store, local: local, log: d.log, stats: d.stats, max: d.cfg.DeviceCacheSize, known: d.knownPeer, byID: map[keys.PublicKey]*list.Element{}, lru: list.New()}
}

// of returns the devices of an identity (the map may be updated in place by
// the installation, its only user).
func (r *registry) of(identity keys.PublicKey) map[string]*messages.DeviceRecord {
	if e, ok := r.byID[identity]; ok {
		r.lru.MoveToFront(e)
		return e.Value.(*registryEntry).devices
	}
	devices := r.load(identity)
	r.byID[identity] = r.lru.PushFront(&registryEntry{identity: identity, devices: devices})
	for r.lru.Len() > r.max {
		last := r.lru.Back()
		r.lru.Remove(last)
		delete(r.byID, last.Value.(*registryEntry).identity)
	}
	return devices
}

// load reads an identity's device records; an unreadable or invalid one is
// reported with its key and skipped.
func (r *registry) load(identity keys.PublicKey) map[string]*messages.DeviceRecord {
	devices := map[string]*messages.DeviceRecord{}
	if !r.known(r.local, identity[:], persistence.MarkDevices) {
		return devices // a new peer: no devices
	}
	err := r.store.Scan(persistence.DeviceIdentityPrefix(r.local, identity[:]), func(k, v []byte) error {
		d, err := parseDevice(v)
		if err != nil {
			r.log.Warn("device record invalid; skipped", "key", fmt.Sprintf("%x", k), "err", err)
			r.stats.corrupt.Add(1)
			return nil
		}
		if keys.PublicKey(d.Identity) == identity {
			devices[d.InstallationId] = d
		}
		return nil
	})
	if err != nil {
		r.log.Warn("device scan failed", "err", err)
	}
	return devices
}

// all reads every device record from the store (listing every identity).
func (r *registry) all() []*messages.DeviceRecord {
	var out []*messages.DeviceRecord
	err := r.store.Scan(persistence.DevicePrefix(r.local), func(k, v []byte) error {
		if d, err := parseDevice(v); err == nil {
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		r.log.Warn("device scan failed", "err", err)
	}
	// What is cached may be newer than what the Committer has written.
	for _, e := range r.byID {
		ent := e.Value.(*registryEntry)
		kept := out[:0]
		for _, d := range out {
			if keys.PublicKey(d.Identity) != ent.identity {
				kept = append(kept, d)
			}
		}
		out = kept
		for _, d := range ent.devices {
			out = append(out, d)
		}
	}
	return out
}

func parseDevice(v []byte) (*messages.DeviceRecord, error) {
	var d messages.DeviceRecord
	if err := proto.Unmarshal(v, &d); err != nil {
		return nil, err
	}
	if _, err := keys.ParsePublicKey(d.Identity); err != nil {
		return nil, err
	}
	if _, err := keys.ParsePublicKey(d.SignedPreKey); err != nil {
		return nil, err
	}
	return &d, nil
}
