package ratchet

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/hkdf"
)

// TestShortKDFsMatchStandard: hmacShort and hkdfSHA256 agree with
// crypto/hmac and x/crypto/hkdf for every key, message, salt and output
// length the ratchet can give them, and more.
func TestShortKDFsMatchStandard(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{'k', 'd', 'f'}))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for range 500 {
		key, msg := fill(rng.IntN(hmacBlock+1)), fill(rng.IntN(maxShort+1))
		split := rng.IntN(len(msg) + 1)
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		want := m.Sum(nil)
		if got := hmacShort(key, msg[:split], msg[split:]); !bytes.Equal(got[:], want) {
			t.Fatalf("hmac key %x msg %x: %x, want %x", key, msg, got, want)
		}

		ikm, salt, info := fill(rng.IntN(maxShort+1)), fill(rng.IntN(hmacBlock+1)), string(fill(rng.IntN(65)))
		out := make([]byte, 1+rng.IntN(200))
		hkdfSHA256(out, ikm, salt, info)
		std := make([]byte, len(out))
		if _, err := io.ReadFull(hkdf.New(sha256.New, ikm, salt, []byte(info)), std); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, std) {
			t.Fatalf("hkdf ikm %x salt %x info %q: %x, want %x", ikm, salt, info, out, std)
		}
	}
}

func TestKDFsDoNotAllocate(t *testing.T) {
	var ck ChainKey
	var rk RootKey
	var dh [32]byte
	if n := testing.AllocsPerRun(100, func() { KDFCK(ck) }); n != 0 {
		t.Errorf("KDFCK allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { KDFRK(rk, dh) }); n != 0 {
		t.Errorf("KDFRK allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { expand(MessageKey{}) }); n != 0 {
		t.Errorf("expand allocates %v times", n)
	}
}
