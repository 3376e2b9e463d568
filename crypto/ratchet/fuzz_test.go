package ratchet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/messages"
)

// advFuzzTarget is the fixed receiver of the fuzz targets: Bob of advScene,
// whose state has a current chain, a closed chain and stored keys, with the
// genuine pending messages as seeds.
type advFuzzTarget struct {
	scene    *advScene
	state    []byte
	skipped  []ratchet.SkippedKey
	genuine  map[string][]byte // advGenuineKey -> plaintext
	bundleID keys.PublicKey
}

func advGenuineKey(h ratchet.Header, ct []byte) string {
	var b [8]byte
	binary.LittleEndian.PutUint32(b[:4], h.N)
	binary.LittleEndian.PutUint32(b[4:], h.PN)
	return string(h.DH[:]) + string(b[:]) + string(ct)
}

func newAdvFuzzTarget(f *testing.F) *advFuzzTarget {
	s := advBuildScene(f, ratchet.Limits{}, "fuzz")
	snap := advSnapshot(f, s.b)
	ft := &advFuzzTarget{scene: s, state: snap.State, skipped: snap.Skipped, genuine: map[string][]byte{}, bundleID: s.bundleID}
	for _, tg := range s.targets() {
		ft.genuine[advGenuineKey(tg.m.h, tg.m.ct)] = tg.m.pt
		// Every seed message decrypts against the fixed state.
		res, err := ratchet.Decrypt(&s.b.sess.State, &s.b.sess.Skipped, tg.m.h, tg.m.ct, s.b.sess.Limits, newAdvRand("seed"))
		if err != nil || !bytes.Equal(res.Plaintext, tg.m.pt) {
			f.Fatalf("seed %s does not decrypt: %v", tg.name, err)
		}
	}
	return ft
}

// check decrypts against the fixed state with the pure Decrypt and checks
// the invariants: no panic, the inputs unchanged, a known error class, and
// success only for a genuine message, with its plaintext.
func (ft *advFuzzTarget) check(t *testing.T, h ratchet.Header, ct []byte) {
	sess := ft.scene.b.sess
	rnd := newAdvRand("fuzz-call")
	res, err := ratchet.Decrypt(&sess.State, &sess.Skipped, h, ct, sess.Limits, rnd)

	after := advSnapshot(t, ft.scene.b)
	if !bytes.Equal(after.State, ft.state) {
		t.Fatalf("Decrypt modified the state it was given (err %v)", err)
	}
	if !reflect.DeepEqual(after.Skipped, ft.skipped) {
		t.Fatalf("Decrypt modified the skipped keys it was given (err %v)", err)
	}
	if err != nil {
		if res != nil {
			t.Fatal("a result with an error")
		}
		known := false
		for _, e := range []error{ratchet.ErrInvalidMAC, ratchet.ErrMalformedMessage, ratchet.ErrDuplicateMessage, ratchet.ErrTooManySkipped} {
			known = known || errors.Is(err, e)
		}
		if !known {
			t.Fatalf("unexpected error class: %v", err)
		}
		if rnd.pos != 0 {
			t.Fatalf("a failed decrypt drew %d random bytes", rnd.pos)
		}
		return
	}
	want, ok := ft.genuine[advGenuineKey(h, ct)]
	if !ok {
		t.Fatalf("a message that was never sent decrypted: n=%d pn=%d ct=%x -> %q", h.N, h.PN, ct, res.Plaintext)
	}
	if !bytes.Equal(res.Plaintext, want) {
		t.Fatalf("plaintext %q, want %q", res.Plaintext, want)
	}
	// The result commits cleanly to a copy, within the limits.
	c := advClone(t, ft.scene.b)
	c.sess.Apply(res)
	advCheckStore(t, c)
}

// FuzzDecrypt: (ratchet key bytes, n, pn, ciphertext) through ParseHeader
// and the pure Decrypt against a fixed session state.
func FuzzDecrypt(f *testing.F) {
	ft := newAdvFuzzTarget(f)
	for _, tg := range ft.scene.targets() {
		f.Add(tg.m.h.DH[:], tg.m.h.N, tg.m.h.PN, tg.m.ct)
		f.Add(tg.m.h.DH[:], tg.m.h.N+1, tg.m.h.PN, tg.m.ct)
	}
	s := ft.scene
	f.Add(s.a0.h.DH[:], uint32(0), uint32(0), s.a0.ct)
	f.Add(s.cur.h.DH[:], uint32(2000), uint32(0), s.cur.ct)
	f.Add(s.newChain.h.DH[:], uint32(0), uint32(1001), s.newChain.ct)
	f.Add([]byte{}, uint32(0), uint32(0), []byte{})
	f.Add(make([]byte, 33), uint32(1), uint32(1), make([]byte, 48))
	f.Fuzz(func(t *testing.T, key []byte, n, pn uint32, ct []byte) {
		h, id, err := ratchet.ParseHeader(&messages.DRHeader{Key: key, N: n, Pn: pn, Id: ft.bundleID[:]})
		if err != nil {
			if !errors.Is(err, ratchet.ErrMalformedMessage) {
				t.Fatalf("ParseHeader: %v", err)
			}
			if _, perr := keys.ParsePublicKey(key); perr == nil {
				t.Fatalf("ParseHeader refused a valid key: %v", err)
			}
			return
		}
		if id != ft.bundleID || !bytes.Equal(h.DH[:], key) || h.N != n || h.PN != pn {
			t.Fatalf("ParseHeader = %+v, %x", h, id)
		}
		ft.check(t, h, ct)
	})
}

// FuzzDecodeEncryptedMessage: wire bytes of an EncryptedMessageProtocol,
// decoded, ParseHeader on its DRHeader, and Decrypt against the fixed state.
func FuzzDecodeEncryptedMessage(f *testing.F) {
	ft := newAdvFuzzTarget(f)
	for i, tg := range ft.scene.targets() {
		m := &messages.EncryptedMessageProtocol{DrHeader: tg.m.h.Proto(ft.bundleID), Payload: tg.m.ct}
		if i%2 == 0 {
			m.X3DhHeader = &messages.X3DHHeader{Key: ft.scene.a0.h.DH[:], Id: ft.bundleID[:]}
		}
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dh, err := proto.Marshal(&messages.EncryptedMessageProtocol{DhHeader: &messages.DHHeader{Key: ft.bundleID[:]}, Payload: make([]byte, 40)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(dh)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m messages.EncryptedMessageProtocol
		if err := proto.Unmarshal(data, &m); err != nil {
			return
		}
		h, _, err := ratchet.ParseHeader(m.GetDrHeader())
		if err != nil {
			if !errors.Is(err, ratchet.ErrMalformedMessage) {
				t.Fatalf("ParseHeader: %v", err)
			}
			return
		}
		ft.check(t, h, m.GetPayload())
	})
}

// FuzzStateFromSnapshot: any bytes decoded as a persisted state and its
// skipped keys never panic, and a state that loads survives a snapshot round
// trip unchanged (the store's records are validated on load).
func FuzzStateFromSnapshot(f *testing.F) {
	s := advBuildScene(f, ratchet.Limits{}, "fuzz-state")
	good, _ := proto.Marshal(s.b.sess.State.Snapshot())
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p messages.RatchetState
		if proto.Unmarshal(b, &p) != nil {
			return
		}
		st, err := ratchet.StateFromSnapshot(&p, ratchet.DefaultLimits())
		if err != nil {
			return
		}
		again, err := ratchet.StateFromSnapshot(st.Snapshot(), ratchet.DefaultLimits())
		if err != nil {
			t.Fatalf("a loaded state does not load again: %v", err)
		}
		if !proto.Equal(again.Snapshot(), st.Snapshot()) {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}
