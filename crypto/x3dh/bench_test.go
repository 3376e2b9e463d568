package x3dh_test

import (
	"crypto/rand"
	"testing"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
)

func benchKeys(b *testing.B) (ika, ikb, spk keys.KeyPair) {
	var err error
	for _, k := range []*keys.KeyPair{&ika, &ikb, &spk} {
		if *k, err = keys.GenerateKey(rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
	return
}

// BenchmarkActive: the initiator's X3DH with a fresh ephemeral key (key
// generation + 3 ECDH + Keccak).
func BenchmarkActive(b *testing.B) {
	ika, ikb, spk := benchKeys(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x3dh.Initiate(rand.Reader, ika.Private, ikb.Public, spk.Public); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPassive: the responder's X3DH (3 ECDH + Keccak).
func BenchmarkPassive(b *testing.B) {
	ika, ikb, spk := benchKeys(b)
	ini, err := x3dh.Initiate(rand.Reader, ika.Private, ikb.Public, spk.Public)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x3dh.Passive(ikb.Private, spk.Private, ika.Public, ini.Ephemeral); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDH: one Status DH (decompress + scalar multiplication).
func BenchmarkECDH(b *testing.B) {
	ika, ikb, _ := benchKeys(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := keys.ECDH(ika.Private, ikb.Public); err != nil {
			b.Fatal(err)
		}
	}
}
