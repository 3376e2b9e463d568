package x3dh_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	mrand "math/rand/v2"
	"testing"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
)

func priv(t *testing.T, h string) keys.PrivateKey {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := keys.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

func pub(t *testing.T, sk keys.PrivateKey) keys.PublicKey {
	t.Helper()
	pk, err := sk.Public()
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// TestKnownAnswer: the x3dh vector "kat-1-2" of status-vectors.json (made
// by Status's own code), both sides. The vectors package runs the whole
// file; this keeps the package's own test from depending on ../shared.
func TestKnownAnswer(t *testing.T) {
	ia := priv(t, "3030303030303030303030303030303030303030303030303030303030303030")
	ea := priv(t, "3131313131313131313131313131313131313131313131313131313131313131")
	ib := priv(t, "3232323232323232323232323232323232323232323232323232323232323232")
	spk := priv(t, "3333333333333333333333333333333333333333333333333333333333333333")
	want := "a4e923d0af8fe78a056363be20e71c0a58e569ea8fc1f79289eca10d9f68133a"

	active, err := x3dh.Active(ia, ea, pub(t, ib), pub(t, spk))
	if err != nil {
		t.Fatal(err)
	}
	passive, err := x3dh.Passive(ib, spk, pub(t, ia), pub(t, ea))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(active[:]); got != want {
		t.Fatalf("active SK %s, want %s", got, want)
	}
	if passive != active {
		t.Fatalf("passive SK %x differs from active %x", passive, active)
	}
}

// TestAgreementAndBinding: for random keys both sides agree, and replacing
// any one of the four keys on one side changes SK (each of dh1..dh3 binds a
// different pair; status-compat.md §5.1).
func TestAgreementAndBinding(t *testing.T) {
	gen := func() keys.KeyPair {
		k, err := keys.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	for range 20 {
		ia, ib, spk := gen(), gen(), gen()
		ini, err := x3dh.Initiate(rand.Reader, ia.Private, ib.Public, spk.Public)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := x3dh.Passive(ib.Private, spk.Private, ia.Public, ini.Ephemeral)
		if err != nil {
			t.Fatal(err)
		}
		if sk != ini.SK {
			t.Fatal("the two sides disagree")
		}
		other := gen()
		variants := map[string][4]keys.PrivateKey{
			"responder identity": {other.Private, spk.Private},
			"signed prekey":      {ib.Private, other.Private},
			"both swapped":       {spk.Private, ib.Private},
		}
		for name, v := range variants {
			got, err := x3dh.Passive(v[0], v[1], ia.Public, ini.Ephemeral)
			if err != nil {
				t.Fatal(err)
			}
			if got == ini.SK {
				t.Fatalf("%s replaced: SK unchanged", name)
			}
		}
		for name, p := range map[string][2]keys.PublicKey{
			"initiator identity": {other.Public, ini.Ephemeral},
			"ephemeral":          {ia.Public, other.Public},
		} {
			got, err := x3dh.Passive(ib.Private, spk.Private, p[0], p[1])
			if err != nil {
				t.Fatal(err)
			}
			if got == ini.SK {
				t.Fatalf("%s replaced: SK unchanged", name)
			}
		}
	}
}

// TestInitiateRandomness: the ephemeral key comes from the injected reader
// only (the package is pure): the same bytes give the same initiation, a
// failing reader an error and no initiation.
func TestInitiateRandomness(t *testing.T) {
	ia := priv(t, "3030303030303030303030303030303030303030303030303030303030303030")
	ib := priv(t, "3232323232323232323232323232323232323232323232323232323232323232")
	spk := priv(t, "3333333333333333333333333333333333333333333333333333333333333333")
	seed := bytes.Repeat([]byte{0x31}, 64)
	a, err := x3dh.Initiate(bytes.NewReader(seed), ia, pub(t, ib), pub(t, spk))
	if err != nil {
		t.Fatal(err)
	}
	b, err := x3dh.Initiate(bytes.NewReader(seed), ia, pub(t, ib), pub(t, spk))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("the same randomness gave two initiations")
	}
	ini, err := x3dh.Initiate(bytes.NewReader(nil), ia, pub(t, ib), pub(t, spk))
	if err == nil {
		t.Fatal("an empty reader gave an initiation")
	}
	if ini != (x3dh.Initiation{}) {
		t.Fatal("a failed initiation returned key material")
	}
}

// TestInvalidPeerKeys: a peer key that is not a valid curve point (as a
// zero value that bypassed parsing would be) is an error, never an SK.
func TestInvalidPeerKeys(t *testing.T) {
	ia := priv(t, "3030303030303030303030303030303030303030303030303030303030303030")
	ea := priv(t, "3131313131313131313131313131313131313131313131313131313131313131")
	good := pub(t, priv(t, "3232323232323232323232323232323232323232323232323232323232323232"))
	r := mrand.New(mrand.NewPCG(1, 2))
	var bad []keys.PublicKey
	bad = append(bad, keys.PublicKey{}) // zero value
	for range 8 {
		var pk keys.PublicKey
		for i := range pk {
			pk[i] = byte(r.Uint32())
		}
		pk[0] = 0x05 // no valid prefix
		bad = append(bad, pk)
	}
	for _, b := range bad {
		if _, err := x3dh.Active(ia, ea, b, good); err == nil {
			t.Fatalf("peer identity %x accepted", b)
		}
		if _, err := x3dh.Active(ia, ea, good, b); err == nil {
			t.Fatalf("peer signed prekey %x accepted", b)
		}
	}
}
