package bundle_test

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
)

func benchBundle(b *testing.B) (keys.KeyPair, []bundle.Entry) {
	id, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	spk, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return id, []bundle.Entry{{InstallationID: "6f9cbd86-3f5b-4d3e-9a8e-0b1c2d3e4f50", SignedPreKey: spk.Public, Version: 1, ProtocolVersion: 1}}
}

// BenchmarkSign: re-signing this installation's bundle, as on every send.
func BenchmarkSign(b *testing.B) {
	id, entries := benchBundle(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bundle.Sign(id, entries, time.Now().UnixNano()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify: verifying a received bundle (key parsing + recovery).
func BenchmarkVerify(b *testing.B) {
	id, entries := benchBundle(b)
	v, err := bundle.Sign(id, entries, time.Now().UnixNano())
	if err != nil {
		b.Fatal(err)
	}
	p := v.Proto()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bundle.Verify(p); err != nil {
			b.Fatal(err)
		}
	}
}
