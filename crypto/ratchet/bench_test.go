package ratchet_test

import (
	"testing"

	"github.com/ratchetd/ratchetd/crypto/ratchet"
)

var payload200 = make([]byte, 200)

// BenchmarkEncryptChain: one encrypt on an existing sending chain (200-byte
// payload): KDF_CK, message-key expansion, AES-CTR and HMAC.
func BenchmarkEncryptChain(b *testing.B) {
	a, _ := pair(b, ratchet.DefaultLimits(), newDet(1))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := a.Encrypt(payload200); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecryptChain: one in-order decrypt on an existing receiving chain
// (200-byte payload), committed with Session.Apply.
func BenchmarkDecryptChain(b *testing.B) {
	rnd := newDet(2)
	a, bob := pair(b, ratchet.DefaultLimits(), rnd)
	type m struct {
		h  ratchet.Header
		ct []byte
	}
	msgs := make([]m, b.N+1)
	for i := range msgs {
		h, ct, err := a.Encrypt(payload200)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m{h, ct}
	}
	// The first message does the responder's DH step; it is not measured.
	if _, _, err := bob.Decrypt(msgs[0].h, msgs[0].ct, rnd); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		if _, _, err := bob.Decrypt(msgs[i].h, msgs[i].ct, rnd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDHRatchetStep: strict ping-pong, so every decrypt takes a DH
// ratchet step (two ECDH and a key generation) and every encrypt starts a
// new chain. One op = one message (encrypt + decrypt).
func BenchmarkDHRatchetStep(b *testing.B) {
	rnd := newDet(3)
	a, bob := pair(b, ratchet.DefaultLimits(), rnd)
	sides := [2]*ratchet.Session{a, bob}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		from, to := sides[i%2], sides[(i+1)%2]
		h, ct, err := from.Encrypt(payload200)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := to.Decrypt(h, ct, rnd); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkSkipAhead: a message 1000 ahead on its chain (MaxSkip), so the
// receiver derives and stores 1000 skipped keys.
func BenchmarkSkipAhead(b *testing.B) {
	rnd := newDet(4)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		a, bob := pair(b, ratchet.DefaultLimits(), rnd)
		var h ratchet.Header
		var ct []byte
		for range ratchet.DefaultMaxSkip + 1 {
			h, ct, _ = a.Encrypt(payload200)
		}
		b.StartTimer()
		if _, _, err := bob.Decrypt(h, ct, rnd); err != nil {
			b.Fatal(err)
		}
	}
}
