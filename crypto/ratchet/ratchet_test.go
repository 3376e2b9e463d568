package ratchet_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
)

// detReader is a deterministic byte source for scripted keys.
type detReader struct{ r *rand.ChaCha8 }

func newDet(seed uint64) *detReader {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	s[2] = byte(seed >> 16)
	return &detReader{rand.NewChaCha8(s)}
}

func (d *detReader) Read(p []byte) (int, error) { return d.r.Read(p) }

// pair builds an initiator and a responder session that share an X3DH secret.
func pair(t testing.TB, lim ratchet.Limits, rnd *detReader) (a, b *ratchet.Session) {
	t.Helper()
	ika, _ := keys.GenerateKey(rnd)
	ikb, _ := keys.GenerateKey(rnd)
	spk, _ := keys.GenerateKey(rnd)
	ini, err := x3dh.Initiate(rnd, ika.Private, ikb.Public, spk.Public)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := x3dh.Passive(ikb.Private, spk.Private, ika.Public, ini.Ephemeral)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), spk.Public, rnd)
	if err != nil {
		t.Fatal(err)
	}
	return &ratchet.Session{State: st, Limits: lim}, &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), spk), Limits: lim}
}

type msg struct {
	h   ratchet.Header
	ct  []byte
	pt  string
	to  int
	got bool
}

func snapshotBytes(t testing.TB, s *ratchet.Session) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.State.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRandomSchedules runs seeded random conversations with drops,
// reordering, duplicates and snapshot/restore of either side, and checks that
// every message delivered within the limits decrypts exactly once, that
// duplicates are reported as such, and that failures leave the state
// byte-identical.
func TestRandomSchedules(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomSchedule(t, uint64(seed)) })
	}
}

func randomSchedule(t *testing.T, seed uint64) {
	rnd := newDet(seed)
	r := rand.New(rand.NewPCG(seed, 99))
	lim := ratchet.Limits{MaxSkip: 40, MaxKeep: 200, MaxMessageKeysPerSession: 120}
	a, b := pair(t, lim, rnd)
	sides := [2]*ratchet.Session{a, b}
	var inflight []*msg
	delivered := map[string]bool{}
	bobHeard := false
	for step := range 600 {
		switch op := r.IntN(10); {
		case op < 4: // send
			from := r.IntN(2)
			if from == 1 && !bobHeard {
				from = 0
			}
			text := fmt.Sprintf("s%d-%d", seed, step)
			h, ct, err := sides[from].Encrypt([]byte(text))
			if err != nil {
				t.Fatalf("step %d encrypt: %v", step, err)
			}
			inflight = append(inflight, &msg{h: h, ct: ct, pt: text, to: 1 - from})
		case op < 8 && len(inflight) > 0: // deliver one (random order), maybe keep a copy
			i := r.IntN(len(inflight))
			m := inflight[i]
			if r.IntN(4) != 0 {
				inflight = append(inflight[:i], inflight[i+1:]...)
			}
			recv := sides[m.to]
			before, beforeKeys := snapshotBytes(t, recv), recv.Skipped.All()
			res, _, err := recv.Decrypt(m.h, m.ct, rnd)
			switch {
			case err == nil:
				if string(res.Plaintext) != m.pt {
					t.Fatalf("step %d: plaintext %q, want %q", step, res.Plaintext, m.pt)
				}
				if delivered[m.pt] {
					t.Fatalf("step %d: %q decrypted twice", step, m.pt)
				}
				delivered[m.pt] = true
				if m.to == 1 {
					bobHeard = true
				}
			case errors.Is(err, ratchet.ErrDuplicateMessage) || errors.Is(err, ratchet.ErrTooManySkipped):
				if errors.Is(err, ratchet.ErrDuplicateMessage) && !delivered[m.pt] {
					// Allowed only if its key was evicted by the retention limits.
					if recv.Skipped.Len() < lim.MaxMessageKeysPerSession && recv.State.KeysCount < lim.MaxKeep {
						t.Fatalf("step %d: %q reported duplicate but never delivered", step, m.pt)
					}
				}
				if !bytes.Equal(before, snapshotBytes(t, recv)) || !reflect.DeepEqual(beforeKeys, recv.Skipped.All()) {
					t.Fatalf("step %d: failed decrypt changed the state", step)
				}
			default:
				// A message from a chain closed longer ago than MaxPreviousChains
				// is taken for a new ratchet key and fails its MAC.
				if !errors.Is(err, ratchet.ErrInvalidMAC) && !errors.Is(err, ratchet.ErrMalformedMessage) {
					t.Fatalf("step %d: unexpected error %v", step, err)
				}
				if !bytes.Equal(before, snapshotBytes(t, recv)) {
					t.Fatalf("step %d: failed decrypt changed the state", step)
				}
			}
		case op == 8 && len(inflight) > 0: // drop
			i := r.IntN(len(inflight))
			inflight = append(inflight[:i], inflight[i+1:]...)
		default: // restart one side from its snapshot
			i := r.IntN(2)
			st, err := ratchet.StateFromSnapshot(sides[i].State.Snapshot(), lim)
			if err != nil {
				t.Fatalf("step %d restore: %v", step, err)
			}
			sk, err := ratchet.SkippedKeysFromSnapshot(sides[i].Skipped.Snapshot(), st.KeysCount, lim)
			if err != nil {
				t.Fatalf("step %d restore keys: %v", step, err)
			}
			if !reflect.DeepEqual(st, sides[i].State) || !reflect.DeepEqual(sk.All(), sides[i].Skipped.All()) {
				t.Fatalf("step %d: snapshot round trip differs", step)
			}
			sides[i] = &ratchet.Session{State: st, Skipped: sk, Limits: lim}
		}
		for _, s := range sides {
			if s.Skipped.Len() > lim.MaxMessageKeysPerSession {
				t.Fatalf("step %d: %d skipped keys, cap %d", step, s.Skipped.Len(), lim.MaxMessageKeysPerSession)
			}
		}
	}
	if len(delivered) == 0 {
		t.Fatal("nothing delivered")
	}
}

// TestSessionIDKAT8 checks the local session ids of status-compat.md KAT-8.
func TestSessionIDKAT8(t *testing.T) {
	spk, _ := hex.DecodeString("023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b1")
	id, err := keys.ParsePublicKey(spk)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ inst, want string }{
		{"6f9cbd86-3f5b-4d3e-9a8e-0b1c2d3e4f50", "023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b136663963626438362d336635622d346433652d396138652d306231633264336534663530"},
		{"0b7e2f1a-aaaa-4bbb-8ccc-dddddddddddd", "023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b130623765326631612d616161612d346262622d386363632d646464646464646464646464"},
	} {
		if got := hex.EncodeToString(ratchet.SessionID(id, c.inst)); got != c.want {
			t.Errorf("session id for %s = %s, want %s", c.inst, got, c.want)
		}
	}
}

// TestStateFromSnapshotRejects checks that a persisted state is validated on
// load: wrong lengths, an invalid key, a key pair that does not match, too
// many previous chains, and skipped keys out of sequence order.
func TestStateFromSnapshotRejects(t *testing.T) {
	rnd := newDet(7)
	a, b := pair(t, ratchet.DefaultLimits(), rnd)
	h, ct, _ := a.Encrypt([]byte("x"))
	if _, _, err := b.Decrypt(h, ct, rnd); err != nil {
		t.Fatal(err)
	}
	other, _ := keys.GenerateKey(rnd)
	good := b.State.Snapshot()
	if _, err := ratchet.StateFromSnapshot(good, ratchet.DefaultLimits()); err != nil {
		t.Fatalf("good snapshot refused: %v", err)
	}
	cases := map[string]func(){
		"short root":          func() { good.RootKey = good.RootKey[:31] },
		"long send chain":     func() { good.SendChainKey = append(good.SendChainKey, 0) },
		"zero private":        func() { good.DhSendPrivate = make([]byte, 32) },
		"bad public":          func() { good.DhSendPublic = make([]byte, 33) },
		"mismatched pair":     func() { good.DhSendPublic = other.Public[:] },
		"bad peer key":        func() { good.DhRecv = []byte{2, 1} },
		"bad previous chain":  func() { good.PreviousChains = append(good.PreviousChains, nil) },
		"too many prev chain": nil,
	}
	for name, mutate := range cases {
		good = b.State.Snapshot()
		if mutate == nil {
			lim := ratchet.DefaultLimits()
			lim.MaxPreviousChains = 1
			s := b.State
			s.Previous = []ratchet.ChainEnd{{Key: other.Public, Length: 1}, {Key: other.Public, Length: 2}}
			if _, err := ratchet.StateFromSnapshot(s.Snapshot(), lim); !errors.Is(err, ratchet.ErrInvalidState) {
				t.Errorf("%s: err = %v", name, err)
			}
			continue
		}
		mutate()
		if _, err := ratchet.StateFromSnapshot(good, ratchet.DefaultLimits()); !errors.Is(err, ratchet.ErrInvalidState) {
			t.Errorf("%s: err = %v, want ErrInvalidState", name, err)
		}
	}
	// Skipped keys: out of order, seq beyond KeysCount, bad lengths; and the
	// limits apply on load.
	var msgs [][2]any
	for i := range 6 {
		h, ct, _ := a.Encrypt([]byte{byte(i)})
		msgs = append(msgs, [2]any{h, ct})
	}
	last := msgs[5]
	if _, _, err := b.Decrypt(last[0].(ratchet.Header), last[1].([]byte), rnd); err != nil {
		t.Fatal(err)
	}
	snap := b.Skipped.Snapshot()
	if len(snap) != 5 {
		t.Fatalf("%d skipped keys, want 5", len(snap))
	}
	bad := append(snap[:0:0], snap[1], snap[0])
	if _, err := ratchet.SkippedKeysFromSnapshot(bad, b.State.KeysCount, ratchet.DefaultLimits()); !errors.Is(err, ratchet.ErrInvalidState) {
		t.Errorf("out-of-order seq: err = %v", err)
	}
	if _, err := ratchet.SkippedKeysFromSnapshot(snap, snap[4].Seq, ratchet.DefaultLimits()); !errors.Is(err, ratchet.ErrInvalidState) {
		t.Errorf("seq beyond KeysCount: err = %v", err)
	}
	lim := ratchet.DefaultLimits()
	lim.MaxMessageKeysPerSession = 2
	sk, err := ratchet.SkippedKeysFromSnapshot(snap, b.State.KeysCount, lim)
	if err != nil || sk.Len() != 2 {
		t.Errorf("limits on load: len %d, err %v", sk.Len(), err)
	}
}
