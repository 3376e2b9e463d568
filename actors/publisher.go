package actors

import (
	"bytes"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// bundlePublisher is the BundlePublisher actor of one installation. It is
// the only writer of the installation's prekeys: it builds and signs the
// bundle (this device plus its enabled paired devices, status-compat.md
// §4.1), rotates the signed prekey every BundleRefreshInterval with version+1
// (§4.2), keeps every old private prekey so that a late X3DH still works,
// re-signs with the current time when the bundle is attached, and publishes
// it on the contact-code topic.
type bundlePublisher struct {
	deps     *deps
	rec      *messages.InstallationRecord
	identity keys.KeyPair
	paired   []*messages.DeviceRecord

	signed   *bundle.Verified
	signedAt time.Time
}

func (p *bundlePublisher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.publish(ctx)
	case *messages.BundleRequest:
		now := time.Unix(0, m.NowUnixNano)
		if p.expired(now) {
			p.rotate(ctx, now)
		}
		b, err := p.bundle(now)
		if err != nil {
			p.deps.log.Error("bundle signing failed", "err", err)
			ctx.Respond(&messages.BundleReply{})
			return
		}
		cur := p.current()
		ctx.Respond(&messages.BundleReply{Bundle: b.Proto(), Current: &messages.OwnPreKey{PublicKey: cur.PublicKey, Version: cur.Version, CreatedUnixNano: cur.CreatedUnixNano}})
	case *messages.RotateRequest:
		p.rotate(ctx, p.deps.cfg.Clock())
		ctx.Respond(&messages.Ack{})
	case *messages.PairedDevices:
		if sameEntries(p.paired, m.Devices) {
			return // the bundle would be the same: no new signature, no new publication
		}
		p.paired = m.Devices
		p.signed = nil
		p.publish(ctx)
	}
}

// sameEntries: two lists of paired devices give the same bundle entries
// (installation, signed prekey, versions; status-compat.md §4.1).
func sameEntries(a, b []*messages.DeviceRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.InstallationId != y.InstallationId || !bytes.Equal(x.SignedPreKey, y.SignedPreKey) || x.Version != y.Version || x.ProtocolVersion != y.ProtocolVersion {
			return false
		}
	}
	return true
}

func (p *bundlePublisher) current() *messages.OwnPreKey { return p.rec.PreKeys[len(p.rec.PreKeys)-1] }

// expired: the current prekey is older than BundleRefreshInterval.
func (p *bundlePublisher) expired(now time.Time) bool {
	return now.Sub(time.Unix(0, p.current().CreatedUnixNano)) >= p.deps.cfg.BundleRefreshInterval
}

// rotate makes a new signed prekey with version+1, persists it with the old
// ones (they are never deleted), and tells the Installation.
func (p *bundlePublisher) rotate(ctx actor.Context, now time.Time) {
	kp, err := keys.GenerateKey(p.deps.cfg.Rand)
	if err != nil {
		p.deps.log.Error("prekey rotation failed", "err", err)
		return
	}
	rec := proto.Clone(p.rec).(*messages.InstallationRecord)
	rec.PreKeys = append(rec.PreKeys, &messages.OwnPreKey{
		PrivateKey: kp.Private[:], PublicKey: kp.Public[:], Version: p.current().Version + 1, CreatedUnixNano: now.UnixNano(),
	})
	v, err := proto.Marshal(rec)
	if err == nil {
		err = p.deps.commit([]persistence.Write{{Key: persistence.InstallationKey(rec.InstallationId), Value: v}})
	}
	if err != nil {
		p.deps.log.Error("prekey rotation not persisted", "err", err)
		return
	}
	p.rec, p.signed = rec, nil
	p.deps.stats.rotations.Add(1)
	ctx.Send(ctx.Parent(), &messages.PreKeysChanged{PreKeys: rec.PreKeys})
	p.publish(ctx)
}

// bundle returns the bundle to attach at now, re-signed when the cached one
// is older than BundleResignInterval.
func (p *bundlePublisher) bundle(now time.Time) (*bundle.Verified, error) {
	if p.signed != nil && fresh(now, p.signedAt, p.deps.cfg.BundleResignInterval) {
		return p.signed, nil
	}
	cur := p.current()
	entries := []bundle.Entry{{InstallationID: p.rec.InstallationId, SignedPreKey: keys.PublicKey(cur.PublicKey), Version: cur.Version, ProtocolVersion: bundle.ProtocolVersion}}
	for _, d := range p.paired {
		if len(entries) >= p.deps.cfg.MaxInstallations {
			break
		}
		entries = append(entries, bundle.Entry{InstallationID: d.InstallationId, SignedPreKey: keys.PublicKey(d.SignedPreKey), Version: d.Version, ProtocolVersion: d.ProtocolVersion})
	}
	b, err := bundle.Sign(p.identity, entries, now.UnixNano())
	if err != nil {
		return nil, err
	}
	p.signed, p.signedAt = b, now
	return b, nil
}

// fresh reports whether a bundle signed at `at` may be attached at now:
// signed less than interval before now, or less than interval after it. An
// Installation reads the clock for its first send before its publisher,
// just started, signs the first bundle: requiring at <= now made every new
// installation sign twice (one signature more per new account: about 2.5 %
// of the x3dh benchmark's CPU). A clock set back by more than interval
// still gets a new signature.
func fresh(now, at time.Time, interval time.Duration) bool {
	d := now.Sub(at)
	return d < interval && d > -interval
}

// publish puts the current bundle on the contact-code topic as a
// ProtocolMessage carrying only the bundle (Status's ContactCodeAdvertisement
// is a public message that carries it, §4.5).
func (p *bundlePublisher) publish(ctx actor.Context) {
	b, err := p.bundle(p.deps.cfg.Clock())
	if err != nil {
		p.deps.log.Error("bundle signing failed", "err", err)
		return
	}
	payload, err := proto.Marshal(&messages.ProtocolMessage{InstallationId: p.rec.InstallationId, Bundles: []*messages.Bundle{b.Proto()}})
	if err != nil {
		return
	}
	env, err := transport.SealWith(p.identity, transport.ContactCodeTopic(p.identity.Public), nil, payload)
	if err == nil {
		err = p.deps.tr.Publish(env)
	}
	if err != nil {
		p.deps.log.Warn("contact code not published", "err", fmt.Sprint(err))
	}
}
