package ratchet_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ratchetd/ratchetd/crypto/ratchet"
)

// TestReserve: a reserved state encrypts exactly as the state that sent the
// messages it skipped would have, the peer decrypts across the gap (keeping
// the unused keys as skipped), and the original state is not touched.
func TestReserve(t *testing.T) {
	a, b := pair(t, ratchet.Limits{}, newDet(41))
	// One exchange, so that b has a sending chain too.
	h, ct, err := a.Encrypt([]byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Decrypt(h, ct, newDet(42)); err != nil {
		t.Fatal(err)
	}

	ref := a.State // the chain as it would go on
	before := snapshotBytes(t, a)
	res, err := ratchet.Reserve(&a.State, a.State.Ns+3)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, a), before) {
		t.Fatal("Reserve modified its argument")
	}
	if res.Ns != a.State.Ns+3 {
		t.Fatalf("reserved Ns = %d, want %d", res.Ns, a.State.Ns+3)
	}
	for range 3 {
		if ref, _, _, err = ratchet.Encrypt(&ref, []byte("unused")); err != nil {
			t.Fatal(err)
		}
	}
	_, wantH, wantCT, err := ratchet.Encrypt(&ref, []byte("after the gap"))
	if err != nil {
		t.Fatal(err)
	}
	_, gotH, gotCT, err := ratchet.Encrypt(&res, []byte("after the gap"))
	if err != nil {
		t.Fatal(err)
	}
	if gotH != wantH || !bytes.Equal(gotCT, wantCT) {
		t.Fatalf("reserved state encrypts as message %d, want the chain's message %d", gotH.N, wantH.N)
	}
	r, _, err := b.Decrypt(gotH, gotCT, newDet(43))
	if err != nil {
		t.Fatalf("peer cannot decrypt across the reserved gap: %v", err)
	}
	if string(r.Plaintext) != "after the gap" || len(r.Skipped) != 3 {
		t.Fatalf("plaintext %q, %d keys skipped; want 3", r.Plaintext, len(r.Skipped))
	}

	// Reserving nothing is the state itself.
	same, err := ratchet.Reserve(&a.State, a.State.Ns)
	if err != nil || same.Send != a.State.Send || same.Ns != a.State.Ns {
		t.Fatalf("Reserve to Ns changed the chain (%v)", err)
	}
}

func TestReserveRejects(t *testing.T) {
	a, b := pair(t, ratchet.Limits{}, newDet(44))
	if _, _, err := a.Encrypt([]byte("x")); err != nil { // Ns 1: a position behind it
		t.Fatal(err)
	}
	ns := a.State.Ns
	for _, tc := range []struct {
		name string
		upto uint32
	}{
		{"behind the chain", ns - 1},
		{"past MaxReserve", ns + ratchet.MaxReserve + 1},
	} {
		if _, err := ratchet.Reserve(&a.State, tc.upto); !errors.Is(err, ratchet.ErrInvalidState) {
			t.Errorf("%s: err = %v, want ErrInvalidState", tc.name, err)
		}
	}
	if _, err := ratchet.Reserve(&a.State, ns+ratchet.MaxReserve); err != nil {
		t.Errorf("MaxReserve ahead: %v", err)
	}
	// A responder before its first message has no sending chain: nothing
	// to reserve, whatever is asked.
	got, err := ratchet.Reserve(&b.State, 10)
	if err != nil || got.Ns != b.State.Ns || got.Send != b.State.Send {
		t.Fatalf("responder without a chain: Ns %d, err %v", got.Ns, err)
	}
}
