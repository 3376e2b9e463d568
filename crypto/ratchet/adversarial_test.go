package ratchet_test

// Adversarial tests of the Double Ratchet: tampered, truncated, forged,
// replayed and out-of-bounds messages against a real initiator/responder
// pair built from X3DH with scripted randomness. Every failing call must
// leave the receiver byte-identical (state snapshot, skipped keys, and the
// position of its random source), and an honest delivery afterwards must
// still succeed (status-compat.md §6.5; security-checklist.md §3 D1-D5).
//
// Identifiers here are prefixed "adv" so that they do not collide with the
// other _test files of this package.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
)

// advRand is a deterministic random source (SHA-256 in counter mode over a
// label). It counts the bytes it has handed out, can be cloned, and can be
// switched to failing.
type advRand struct {
	seed [32]byte
	ctr  uint64
	buf  []byte
	pos  int
	fail bool
}

func newAdvRand(label string) *advRand { return &advRand{seed: sha256.Sum256([]byte(label))} }

func (r *advRand) Read(p []byte) (int, error) {
	if r.fail {
		return 0, errors.New("advRand: entropy source down")
	}
	for i := range p {
		if len(r.buf) == 0 {
			var in [40]byte
			copy(in[:], r.seed[:])
			binary.BigEndian.PutUint64(in[32:], r.ctr)
			r.ctr++
			blk := sha256.Sum256(in[:])
			r.buf = blk[:]
		}
		p[i] = r.buf[0]
		r.buf = r.buf[1:]
	}
	r.pos += len(p)
	return len(p), nil
}

func (r *advRand) clone() *advRand {
	c := *r
	c.buf = bytes.Clone(r.buf)
	return &c
}

type advPeer struct {
	name string
	sess *ratchet.Session
	rnd  *advRand
}

type advMsg struct {
	h  ratchet.Header
	ct []byte
	pt []byte
}

type advPair struct {
	a, b     *advPeer // a: initiator (Alice), b: responder (Bob)
	bundleID keys.PublicKey
	spk      keys.KeyPair
	seq      int
}

// advNewPair runs X3DH between a fresh Alice and Bob and builds Alice's
// initiator and Bob's responder sessions, all from scripted randomness.
func advNewPair(t testing.TB, lim ratchet.Limits, label string) *advPair {
	t.Helper()
	setup := newAdvRand(label + "/setup")
	ika, err := keys.GenerateKey(setup)
	if err != nil {
		t.Fatal(err)
	}
	ikb, err := keys.GenerateKey(setup)
	if err != nil {
		t.Fatal(err)
	}
	spk, err := keys.GenerateKey(setup)
	if err != nil {
		t.Fatal(err)
	}
	ini, err := x3dh.Initiate(setup, ika.Private, ikb.Public, spk.Public)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := x3dh.Passive(ikb.Private, spk.Private, ika.Public, ini.Ephemeral)
	if err != nil {
		t.Fatal(err)
	}
	if sk != ini.SK {
		t.Fatal("X3DH: the two sides disagree")
	}
	arnd := newAdvRand(label + "/alice")
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), spk.Public, arnd)
	if err != nil {
		t.Fatal(err)
	}
	return &advPair{
		a:        &advPeer{name: "alice", sess: &ratchet.Session{State: st, Limits: lim}, rnd: arnd},
		b:        &advPeer{name: "bob", sess: &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), spk), Limits: lim}, rnd: newAdvRand(label + "/bob")},
		bundleID: spk.Public,
		spk:      spk,
	}
}

func (p *advPair) send(t testing.TB, from *advPeer) advMsg {
	t.Helper()
	p.seq++
	pt := fmt.Appendf(nil, "%s#%d", from.name, p.seq)
	h, ct, err := from.sess.Encrypt(pt)
	if err != nil {
		t.Fatalf("%s encrypt: %v", from.name, err)
	}
	return advMsg{h: h, ct: ct, pt: pt}
}

func (p *advPair) sendN(t testing.TB, from *advPeer, n int) []advMsg {
	t.Helper()
	out := make([]advMsg, n)
	for i := range out {
		out[i] = p.send(t, from)
	}
	return out
}

func advMaxSkip(l ratchet.Limits) uint32 {
	if l.MaxSkip == 0 {
		return ratchet.DefaultMaxSkip
	}
	return l.MaxSkip
}

func advCap(l ratchet.Limits) int {
	if l.MaxMessageKeysPerSession <= 0 {
		return ratchet.DefaultMaxMessageKeysPerSession
	}
	return l.MaxMessageKeysPerSession
}

func advMaxKeep(l ratchet.Limits) uint64 {
	if l.MaxKeep == 0 {
		return ratchet.DefaultMaxKeep
	}
	return l.MaxKeep
}

// advDeliver decrypts m at to and requires the plaintext; it returns how
// many keys the limits evicted.
func advDeliver(t testing.TB, to *advPeer, m advMsg) int {
	t.Helper()
	r, evicted, err := to.sess.Decrypt(m.h, m.ct, to.rnd)
	if err != nil {
		t.Fatalf("%s: honest delivery of %q (n=%d pn=%d) failed: %v", to.name, m.pt, m.h.N, m.h.PN, err)
	}
	if !bytes.Equal(r.Plaintext, m.pt) {
		t.Fatalf("%s: plaintext %q, want %q", to.name, r.Plaintext, m.pt)
	}
	advCheckStore(t, to)
	return len(evicted)
}

// advCheckStore checks the skipped-key store's invariants against the
// session's limits.
func advCheckStore(t testing.TB, p *advPeer) {
	t.Helper()
	all := p.sess.Skipped.All()
	lim := p.sess.Limits
	if len(all) != p.sess.Skipped.Len() {
		t.Fatalf("%s: All() has %d keys, Len() %d", p.name, len(all), p.sess.Skipped.Len())
	}
	if len(all) > advCap(lim) {
		t.Fatalf("%s: %d skipped keys, cap %d", p.name, len(all), advCap(lim))
	}
	kc := p.sess.State.KeysCount
	for i, k := range all {
		if i > 0 && k.Seq <= all[i-1].Seq {
			t.Fatalf("%s: skipped keys out of sequence order", p.name)
		}
		if k.Seq >= kc {
			t.Fatalf("%s: key seq %d >= KeysCount %d", p.name, k.Seq, kc)
		}
		if mk := advMaxKeep(lim); kc >= mk && k.Seq <= kc-mk {
			t.Fatalf("%s: key seq %d kept beyond MaxKeep (KeysCount %d, MaxKeep %d)", p.name, k.Seq, kc, mk)
		}
	}
}

type advSnap struct {
	State   []byte
	Skipped []ratchet.SkippedKey
	RandPos int
}

func advSnapshot(t testing.TB, p *advPeer) advSnap {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.sess.State.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	return advSnap{State: b, Skipped: p.sess.Skipped.All(), RandPos: p.rnd.pos}
}

// advMustFail delivers (h, ct) to p, requires an error (matching one of
// want, if any) and requires p unchanged, its random source included.
func advMustFail(t testing.TB, p *advPeer, h ratchet.Header, ct []byte, want ...error) error {
	t.Helper()
	before := advSnapshot(t, p)
	r, _, err := p.sess.Decrypt(h, ct, p.rnd)
	if err == nil {
		t.Fatalf("%s: a bad message (n=%d pn=%d, %d bytes) decrypted to %q", p.name, h.N, h.PN, len(ct), r.Plaintext)
	}
	if r != nil {
		t.Errorf("%s: a failed Decrypt returned a result", p.name)
	}
	if len(want) > 0 {
		ok := false
		for _, w := range want {
			ok = ok || errors.Is(err, w)
		}
		if !ok {
			t.Errorf("%s: n=%d pn=%d: err = %v; want one of %v", p.name, h.N, h.PN, err, want)
		}
	}
	after := advSnapshot(t, p)
	if !bytes.Equal(before.State, after.State) {
		t.Fatalf("%s: a failed decrypt (%v) changed the state", p.name, err)
	}
	if !reflect.DeepEqual(before.Skipped, after.Skipped) {
		t.Fatalf("%s: a failed decrypt (%v) changed the skipped keys", p.name, err)
	}
	if before.RandPos != after.RandPos {
		t.Fatalf("%s: a failed decrypt (%v) drew %d random bytes", p.name, err, after.RandPos-before.RandPos)
	}
	return err
}

// advClone copies a peer through the persistent form (the only deep copy the
// API offers) and checks that the copy is exact.
func advClone(t testing.TB, p *advPeer) *advPeer {
	t.Helper()
	lim := p.sess.Limits
	st, err := ratchet.StateFromSnapshot(p.sess.State.Snapshot(), lim)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ratchet.SkippedKeysFromSnapshot(p.sess.Skipped.Snapshot(), st.KeysCount, lim)
	if err != nil {
		t.Fatal(err)
	}
	c := &advPeer{name: p.name, sess: &ratchet.Session{State: st, Skipped: sk, Limits: lim}, rnd: p.rnd.clone()}
	if !reflect.DeepEqual(advSnapshot(t, c), advSnapshot(t, p)) {
		t.Fatal("clone differs from the original")
	}
	return c
}

// advExpect is the error class a modified message must get from the
// receiver's state, per the order of checks documented on ratchet.Decrypt
// and status-compat.md §6.5. The ciphertext is assumed genuine for some
// other header, so anything that reaches the MAC fails it.
func advExpect(p *advPeer, h ratchet.Header) error {
	st, lim := &p.sess.State, p.sess.Limits
	maxSkip := advMaxSkip(lim)
	if _, ok := p.sess.Skipped.Lookup(ratchet.KeyID{RatchetKey: h.DH, N: h.N}); ok {
		return ratchet.ErrInvalidMAC
	}
	if h.N == math.MaxUint32 {
		return ratchet.ErrMalformedMessage
	}
	if !st.DHr.IsZero() && h.DH == st.DHr {
		switch {
		case h.N < st.Nr:
			return ratchet.ErrDuplicateMessage
		case h.N-st.Nr > maxSkip:
			return ratchet.ErrTooManySkipped
		}
		return ratchet.ErrInvalidMAC
	}
	for _, c := range st.Previous {
		if h.DH == c.Key {
			if h.N < c.Length {
				return ratchet.ErrDuplicateMessage
			}
			return ratchet.ErrMalformedMessage
		}
	}
	switch {
	case h.PN < st.Nr:
		return ratchet.ErrMalformedMessage
	case h.PN-st.Nr > maxSkip, h.N > maxSkip:
		return ratchet.ErrTooManySkipped
	}
	return ratchet.ErrInvalidMAC
}

// advScene is a conversation that leaves Bob with every kind of pending
// message:
//
//	Alice KA1: a0 a1 a2      Bob got a0, a2 (a1's key stored)
//	Bob   KB1: b0            Alice got b0 and stepped to KA2 (pn=3)
//	Alice KA2: a3 a4 a5 a6   Bob got a4 (closed KA1 at 3, a3's key stored)
//	Bob   KB2: b1            Alice got b1 and stepped to KA3 (pn=4)
//	Alice KA3: a7            pending: a new chain that closes KA2 at 4
//
// Bob: DHr = KA2, Nr = 2, Previous = [KA1:3], stored keys (KA1,1), (KA2,0).
type advScene struct {
	*advPair
	a0, a2, a4 advMsg // delivered
	skipOld    advMsg // a1: stored key on the closed chain KA1
	skipCur    advMsg // a3: stored key on the current chain KA2
	cur        advMsg // a5: KA2, n = Nr
	ahead      advMsg // a6: KA2, n = Nr+1
	newChain   advMsg // a7: KA3, n = 0, pn = 4
}

func advBuildScene(t testing.TB, lim ratchet.Limits, label string) *advScene {
	t.Helper()
	p := advNewPair(t, lim, label)
	s := &advScene{advPair: p}
	a := p.sendN(t, p.a, 3)
	advDeliver(t, p.b, a[0])
	advDeliver(t, p.b, a[2])
	advDeliver(t, p.a, p.send(t, p.b))
	a = append(a, p.sendN(t, p.a, 4)...)
	advDeliver(t, p.b, a[4])
	advDeliver(t, p.a, p.send(t, p.b))
	a = append(a, p.send(t, p.a))
	s.a0, s.skipOld, s.a2, s.skipCur, s.a4, s.cur, s.ahead, s.newChain = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]

	st := &p.b.sess.State
	ka1, ka2, ka3 := a[0].h.DH, a[3].h.DH, a[7].h.DH
	switch {
	case ka1 == ka2 || ka2 == ka3 || ka1 == ka3:
		t.Fatal("scene: Alice did not step")
	case st.DHr != ka2 || st.Nr != 2:
		t.Fatalf("scene: Bob at DHr=%s Nr=%d", st.DHr, st.Nr)
	case len(st.Previous) != 1 || st.Previous[0] != (ratchet.ChainEnd{Key: ka1, Length: 3}):
		t.Fatalf("scene: Bob's previous chains %v", st.Previous)
	case s.skipCur.h.PN != 3 || s.newChain.h.PN != 4 || s.newChain.h.N != 0 || s.cur.h.N != 2 || s.ahead.h.N != 3:
		t.Fatal("scene: unexpected headers")
	}
	want := []ratchet.KeyID{{RatchetKey: ka1, N: 1}, {RatchetKey: ka2, N: 0}}
	var got []ratchet.KeyID
	for _, k := range p.b.sess.Skipped.All() {
		got = append(got, k.KeyID)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("scene: Bob's stored keys %v", got)
	}
	return s
}

type advTarget struct {
	name string
	m    advMsg
}

func (s *advScene) targets() []advTarget {
	return []advTarget{
		{"current chain n=Nr", s.cur},
		{"current chain n=Nr+1", s.ahead},
		{"stored key current chain", s.skipCur},
		{"stored key closed chain", s.skipOld},
		{"new chain (DH step)", s.newChain},
	}
}

// advCase delivers a bad variant of target to a clone of Bob, requires it to
// fail with want (any error when want is nil) and unchanged, then delivers
// the genuine target.
func (s *advScene) advCase(t *testing.T, target advMsg, h ratchet.Header, ct []byte, want error) {
	t.Helper()
	bob := advClone(t, s.b)
	if want == nil {
		advMustFail(t, bob, h, ct)
	} else {
		advMustFail(t, bob, h, ct, want)
	}
	advDeliver(t, bob, target)
}

func TestAdversarialTruncation(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "truncation")
	n := 0
	for _, tg := range s.targets() {
		t.Run(tg.name, func(t *testing.T) {
			for l := range ratchet.Overhead {
				s.advCase(t, tg.m, tg.m.h, bytes.Clone(tg.m.ct[:l]), ratchet.ErrMalformedMessage)
				n++
			}
			s.advCase(t, tg.m, tg.m.h, nil, ratchet.ErrMalformedMessage)
			full := len(tg.m.ct)
			if full-1 < ratchet.Overhead {
				t.Fatal("plaintext too short for the table")
			}
			for _, l := range []int{full - 1, max(full-16, ratchet.Overhead), ratchet.Overhead} {
				s.advCase(t, tg.m, tg.m.h, bytes.Clone(tg.m.ct[:l]), ratchet.ErrInvalidMAC)
			}
			// Cut from the front (the IV and part of the body gone).
			s.advCase(t, tg.m, tg.m.h, bytes.Clone(tg.m.ct[1:]), ratchet.ErrInvalidMAC)
			s.advCase(t, tg.m, tg.m.h, append(bytes.Clone(tg.m.ct), 0), ratchet.ErrInvalidMAC)
			n += 6
		})
	}
	t.Logf("%d truncation cases", n)
}

func TestAdversarialBitFlips(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "bitflips")
	for _, tg := range s.targets() {
		t.Run(tg.name, func(t *testing.T) {
			ct := tg.m.ct
			regions := []struct {
				name       string
				start, end int
			}{
				{"iv", 0, 16},
				{"body", 16, len(ct) - 32},
				{"mac", len(ct) - 32, len(ct)},
			}
			if regions[1].end-regions[1].start != len(tg.m.pt) {
				t.Fatalf("layout: body is %d bytes for %d of plaintext", regions[1].end-regions[1].start, len(tg.m.pt))
			}
			for _, r := range regions {
				for bit := r.start * 8; bit < r.end*8; bit++ {
					bad := bytes.Clone(ct)
					bad[bit/8] ^= 1 << (bit % 8)
					s.advCase(t, tg.m, tg.m.h, bad, ratchet.ErrInvalidMAC)
				}
			}
			// The tag, zeroed and swapped for another message's tag.
			bad := bytes.Clone(ct)
			clear(bad[len(bad)-32:])
			s.advCase(t, tg.m, tg.m.h, bad, ratchet.ErrInvalidMAC)
		})
	}
}

func TestAdversarialHeaderFields(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "header")
	classes := map[string]int{}
	for _, tg := range s.targets() {
		t.Run(tg.name, func(t *testing.T) {
			for field := range 2 {
				for bit := range 32 {
					h := tg.m.h
					name := "n"
					if field == 0 {
						h.N ^= 1 << bit
					} else {
						h.PN ^= 1 << bit
						name = "pn"
					}
					want := advExpect(s.b, h)
					classes[name+": "+want.Error()]++
					s.advCase(t, tg.m, h, tg.m.ct, want)
				}
			}
			// Both at once, and the extremes.
			for _, h := range []ratchet.Header{
				{DH: tg.m.h.DH, N: tg.m.h.N + 1, PN: tg.m.h.PN + 1},
				{DH: tg.m.h.DH, N: math.MaxUint32, PN: tg.m.h.PN},
				{DH: tg.m.h.DH, N: tg.m.h.N, PN: math.MaxUint32},
				{DH: tg.m.h.DH, N: math.MaxUint32 - 1, PN: math.MaxUint32},
				{DH: tg.m.h.DH},
			} {
				if h == tg.m.h {
					continue
				}
				s.advCase(t, tg.m, h, tg.m.ct, advExpect(s.b, h))
			}
		})
	}
	t.Logf("error classes of header bit flips: %v", classes)
	for _, want := range []string{"n: " + ratchet.ErrInvalidMAC.Error(), "n: " + ratchet.ErrTooManySkipped.Error(), "n: " + ratchet.ErrDuplicateMessage.Error(), "n: " + ratchet.ErrMalformedMessage.Error(), "pn: " + ratchet.ErrInvalidMAC.Error(), "pn: " + ratchet.ErrTooManySkipped.Error(), "pn: " + ratchet.ErrMalformedMessage.Error()} {
		if classes[want] == 0 {
			t.Errorf("the scene never exercised %q", want)
		}
	}
}

func TestAdversarialRatchetKey(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "dhkey")
	var rejectedAtEdge, decryptFailed int
	for _, tg := range s.targets() {
		t.Run(tg.name, func(t *testing.T) {
			for bit := range keys.PublicKeySize * 8 {
				raw := bytes.Clone(tg.m.h.DH[:])
				raw[bit/8] ^= 1 << (bit % 8)
				wire := &messages.DRHeader{Key: raw, N: tg.m.h.N, Pn: tg.m.h.PN, Id: s.bundleID[:]}
				pk, perr := keys.ParsePublicKey(raw)
				h, id, err := ratchet.ParseHeader(wire)
				if perr != nil {
					if !errors.Is(err, ratchet.ErrMalformedMessage) || !errors.Is(err, keys.ErrInvalidKey) {
						t.Fatalf("bit %d: ParseHeader of an invalid key: %v", bit, err)
					}
					rejectedAtEdge++
					continue
				}
				if err != nil || h.DH != pk || id != s.bundleID || h.N != tg.m.h.N || h.PN != tg.m.h.PN {
					t.Fatalf("bit %d: ParseHeader = %+v, %v", bit, h, err)
				}
				s.advCase(t, tg.m, h, tg.m.ct, advExpect(s.b, h))
				decryptFailed++
			}
			// Keys the receiver knows, in place of the sender's.
			st := &s.b.sess.State
			subs := map[string]keys.PublicKey{
				"receiver's own ratchet key": st.DHs.Public,
				"receiver's current DHr":     st.DHr,
				"bundle id (SPK)":            s.bundleID,
				"an older chain's key":       s.a0.h.DH,
				"the newest chain's key":     s.newChain.h.DH,
			}
			for name, k := range subs {
				if k == tg.m.h.DH {
					continue
				}
				h := tg.m.h
				h.DH = k
				t.Run(name, func(t *testing.T) { s.advCase(t, tg.m, h, tg.m.ct, advExpect(s.b, h)) })
			}
			// A zero key never passes ParseHeader; handed to Decrypt
			// directly it must still fail cleanly.
			h := tg.m.h
			h.DH = keys.PublicKey{}
			s.advCase(t, tg.m, h, tg.m.ct, nil)
		})
	}
	if rejectedAtEdge == 0 || decryptFailed == 0 {
		t.Errorf("rejected at the edge %d, failed in Decrypt %d: both paths should be exercised", rejectedAtEdge, decryptFailed)
	}
	t.Logf("ratchet key bit flips: %d rejected by ParseHeader, %d failed in Decrypt", rejectedAtEdge, decryptFailed)
}

func TestAdversarialParseHeader(t *testing.T) {
	p := advNewPair(t, ratchet.Limits{}, "parse")
	good := p.send(t, p.a).h.Proto(p.bundleID)
	mod := func(f func(h *messages.DRHeader)) *messages.DRHeader {
		h := proto.Clone(good).(*messages.DRHeader)
		f(h)
		return h
	}
	for name, h := range map[string]*messages.DRHeader{
		"nil":          nil,
		"empty":        {},
		"no key":       mod(func(h *messages.DRHeader) { h.Key = nil }),
		"key 32 bytes": mod(func(h *messages.DRHeader) { h.Key = h.Key[1:] }),
		"key 34 bytes": mod(func(h *messages.DRHeader) { h.Key = append(h.Key, 0) }),
		"key 0x04":     mod(func(h *messages.DRHeader) { h.Key[0] = 4 }),
		"key zero":     mod(func(h *messages.DRHeader) { h.Key = make([]byte, 33) }),
		"no id":        mod(func(h *messages.DRHeader) { h.Id = nil }),
		"id 0x00":      mod(func(h *messages.DRHeader) { h.Id[0] = 0 }),
		"id 65 bytes":  mod(func(h *messages.DRHeader) { h.Id = append(h.Id, make([]byte, 32)...) }),
	} {
		if _, _, err := ratchet.ParseHeader(h); !errors.Is(err, ratchet.ErrMalformedMessage) {
			t.Errorf("%s: ParseHeader = %v; want ErrMalformedMessage", name, err)
		}
	}
	h, id, err := ratchet.ParseHeader(good)
	if err != nil || id != p.bundleID || h.Proto(id).String() != good.String() {
		t.Fatalf("ParseHeader of a genuine header: %+v %v", h, err)
	}
}

// TestAdversarialMaxSkip: a gap of exactly MaxSkip is accepted and one more
// is refused, for n on the current chain, n on a new chain, and pn closing
// the previous chain (security-checklist.md §3 D2).
func TestAdversarialMaxSkip(t *testing.T) {
	for _, lim := range []ratchet.Limits{{MaxSkip: 5}, {MaxSkip: 1}, ratchet.DefaultLimits()} {
		ms := int(advMaxSkip(lim))
		t.Run(fmt.Sprintf("MaxSkip=%d", ms), func(t *testing.T) {
			t.Run("n on the current chain", func(t *testing.T) {
				p := advNewPair(t, lim, "maxskip-cur")
				advDeliver(t, p.b, p.send(t, p.a)) // Bob: Nr = 1 on KA1
				m := p.sendN(t, p.a, ms+2)         // m[i].h.N = 1+i
				advMustFail(t, p.b, m[ms+1].h, m[ms+1].ct, ratchet.ErrTooManySkipped)
				advDeliver(t, p.b, m[ms]) // n - Nr == MaxSkip
				if got := p.b.sess.Skipped.Len(); got != ms {
					t.Fatalf("%d keys stored, want %d", got, ms)
				}
				advDeliver(t, p.b, m[ms+1])
				advDeliver(t, p.b, m[0])
				if ms > 1 {
					advDeliver(t, p.b, m[ms-1])
				}
			})
			t.Run("n on the responder's first chain", func(t *testing.T) {
				p := advNewPair(t, lim, "maxskip-first")
				m := p.sendN(t, p.a, ms+2) // m[i].h.N = i
				advMustFail(t, p.b, m[ms+1].h, m[ms+1].ct, ratchet.ErrTooManySkipped)
				if _, _, err := p.b.sess.Encrypt([]byte("x")); !errors.Is(err, ratchet.ErrNoSendingChain) {
					t.Fatalf("responder after a refused first message: %v", err)
				}
				advDeliver(t, p.b, m[ms])
				if got := p.b.sess.Skipped.Len(); got != ms {
					t.Fatalf("%d keys stored, want %d", got, ms)
				}
				advDeliver(t, p.b, m[0])
				advDeliver(t, p.b, m[ms+1])
			})
			t.Run("n on a new chain mid-session", func(t *testing.T) {
				p := advNewPair(t, lim, "maxskip-new")
				advDeliver(t, p.b, p.send(t, p.a))
				advDeliver(t, p.a, p.send(t, p.b)) // Alice: DHr = KB1, Nr = 1
				advDeliver(t, p.b, p.send(t, p.a)) // Bob steps to KB2
				m := p.sendN(t, p.b, ms+2)         // KB2, pn = 1, n = i
				if m[0].h.PN != 1 {
					t.Fatalf("pn = %d", m[0].h.PN)
				}
				advMustFail(t, p.a, m[ms+1].h, m[ms+1].ct, ratchet.ErrTooManySkipped)
				advDeliver(t, p.a, m[ms])
				advDeliver(t, p.a, m[ms+1])
				advDeliver(t, p.a, m[0])
			})
			t.Run("pn closing the previous chain", func(t *testing.T) {
				p := advNewPair(t, lim, "maxskip-pn")
				advDeliver(t, p.b, p.send(t, p.a)) // Bob: Nr = 1 on KA1
				late := p.sendN(t, p.a, ms+1)      // KA1 n = 1 .. ms+1, held back
				advDeliver(t, p.a, p.send(t, p.b)) // Alice steps; PN = ms+2
				c := p.sendN(t, p.a, 2)            // KA2, pn = ms+2
				if c[0].h.PN != uint32(ms+2) {
					t.Fatalf("pn = %d", c[0].h.PN)
				}
				advMustFail(t, p.b, c[0].h, c[0].ct, ratchet.ErrTooManySkipped) // pn - Nr = ms+1
				advMustFail(t, p.b, c[1].h, c[1].ct, ratchet.ErrTooManySkipped)
				advDeliver(t, p.b, late[0])  // Nr = 2
				advDeliver(t, p.b, c[0])     // pn - Nr == MaxSkip
				for _, m := range late[1:] { // every closed-chain key was stored
					advDeliver(t, p.b, m)
				}
				advDeliver(t, p.b, c[1])
				if p.b.sess.Skipped.Len() != 0 {
					t.Fatalf("%d keys left", p.b.sess.Skipped.Len())
				}
			})
			t.Run("pn and n both at the limit", func(t *testing.T) {
				p := advNewPair(t, lim, "maxskip-both")
				advDeliver(t, p.b, p.send(t, p.a))
				late := p.sendN(t, p.a, ms) // KA1 n = 1 .. ms
				advDeliver(t, p.a, p.send(t, p.b))
				c := p.sendN(t, p.a, ms+2) // KA2 n = 0 .. ms+1, pn = ms+1
				advMustFail(t, p.b, c[ms+1].h, c[ms+1].ct, ratchet.ErrTooManySkipped)
				advDeliver(t, p.b, c[ms])
				if got, want := p.b.sess.Skipped.Len(), min(2*ms, advCap(lim)); got != want {
					t.Fatalf("%d keys stored, want %d", got, want)
				}
				advDeliver(t, p.b, late[ms-1])
				advDeliver(t, p.b, c[0])
				advDeliver(t, p.b, c[ms+1])
			})
		})
	}
}

func TestAdversarialDuplicates(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "dups")
	dup := ratchet.ErrDuplicateMessage
	t.Run("same message twice on the current chain", func(t *testing.T) {
		bob := advClone(t, s.b)
		advDeliver(t, bob, s.cur)
		advMustFail(t, bob, s.cur.h, s.cur.ct, dup)
		advDeliver(t, bob, s.ahead)
		advMustFail(t, bob, s.ahead.h, s.ahead.ct, dup)
		advMustFail(t, bob, s.cur.h, s.cur.ct, dup)
	})
	t.Run("already delivered before the scene", func(t *testing.T) {
		bob := advClone(t, s.b)
		for _, m := range []advMsg{s.a0, s.a2, s.a4} {
			advMustFail(t, bob, m.h, m.ct, dup)
		}
	})
	t.Run("stored key on the current chain twice", func(t *testing.T) {
		bob := advClone(t, s.b)
		advDeliver(t, bob, s.skipCur)
		if _, ok := bob.sess.Skipped.Lookup(ratchet.KeyID{RatchetKey: s.skipCur.h.DH, N: s.skipCur.h.N}); ok {
			t.Fatal("a used key is still stored")
		}
		advMustFail(t, bob, s.skipCur.h, s.skipCur.ct, dup)
	})
	t.Run("stored key on a closed chain twice", func(t *testing.T) {
		bob := advClone(t, s.b)
		advDeliver(t, bob, s.skipOld)
		advMustFail(t, bob, s.skipOld.h, s.skipOld.ct, dup)
	})
	t.Run("older chain again after a DH step", func(t *testing.T) {
		bob := advClone(t, s.b)
		advDeliver(t, bob, s.newChain)
		advMustFail(t, bob, s.newChain.h, s.newChain.ct, dup)
		for _, m := range []advMsg{s.a4, s.a0, s.a2} {
			advMustFail(t, bob, m.h, m.ct, dup)
		}
		// The late ones are still there, once each.
		for _, m := range []advMsg{s.cur, s.skipCur, s.skipOld, s.ahead} {
			advDeliver(t, bob, m)
			advMustFail(t, bob, m.h, m.ct, dup)
		}
	})
	t.Run("every message exactly once, any order", func(t *testing.T) {
		pending := []advMsg{s.newChain, s.ahead, s.skipOld, s.cur, s.skipCur}
		for rot := range pending {
			bob := advClone(t, s.b)
			for i := range pending {
				m := pending[(i+rot)%len(pending)]
				advDeliver(t, bob, m)
			}
			for _, m := range append(pending, s.a0, s.a2, s.a4) {
				advMustFail(t, bob, m.h, m.ct, dup)
			}
		}
	})
	t.Run("a chain beyond MaxPreviousChains never decrypts again", func(t *testing.T) {
		p := advNewPair(t, ratchet.Limits{MaxPreviousChains: 1}, "forgotten")
		first := p.send(t, p.a)
		advDeliver(t, p.b, first)
		for range 3 { // three DH round trips: KA1 is forgotten
			advDeliver(t, p.a, p.send(t, p.b))
			advDeliver(t, p.b, p.send(t, p.a))
		}
		if len(p.b.sess.State.Previous) != 1 {
			t.Fatalf("previous chains: %d", len(p.b.sess.State.Previous))
		}
		advMustFail(t, p.b, first.h, first.ct)
	})
}

func TestAdversarialLateMessages(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "late")
	bob := advClone(t, s.b)
	advDeliver(t, bob, s.newChain) // closes KA2 at pn = 4: a5, a6 skipped
	for _, n := range []uint32{2, 3} {
		if _, ok := bob.sess.Skipped.Lookup(ratchet.KeyID{RatchetKey: s.cur.h.DH, N: n}); !ok {
			t.Fatalf("the key of KA2 n=%d was not stored when pn closed the chain", n)
		}
	}
	if prev := bob.sess.State.Previous; len(prev) != 2 || prev[1] != (ratchet.ChainEnd{Key: s.cur.h.DH, Length: 4}) {
		t.Fatalf("previous chains %v", prev)
	}
	advDeliver(t, bob, s.ahead)
	advDeliver(t, bob, s.cur)
	advDeliver(t, bob, s.skipOld)
	advDeliver(t, bob, s.skipCur)
	if bob.sess.Skipped.Len() != 0 {
		t.Fatalf("%d keys left after every late message", bob.sess.Skipped.Len())
	}
	// And the conversation goes on in both directions.
	p := s.advPair
	p.b = bob
	advDeliver(t, p.a, p.send(t, p.b))
	advDeliver(t, p.b, p.send(t, p.a))
}

func TestAdversarialResponderCannotSendFirst(t *testing.T) {
	p := advNewPair(t, ratchet.Limits{}, "nosend")
	before := advSnapshot(t, p.b)
	if _, _, err := p.b.sess.Encrypt([]byte("too early")); !errors.Is(err, ratchet.ErrNoSendingChain) {
		t.Fatalf("responder Encrypt before receiving: %v", err)
	}
	if _, _, _, err := ratchet.Encrypt(&p.b.sess.State, []byte("too early")); !errors.Is(err, ratchet.ErrNoSendingChain) {
		t.Fatalf("ratchet.Encrypt on a fresh responder state: %v", err)
	}
	if !reflect.DeepEqual(before, advSnapshot(t, p.b)) {
		t.Fatal("a refused Encrypt changed the state")
	}
	if p.b.sess.State.CanSend() {
		t.Fatal("CanSend on a fresh responder")
	}
	m := p.send(t, p.a)
	bad := bytes.Clone(m.ct)
	bad[len(bad)-1] ^= 1
	advMustFail(t, p.b, m.h, bad, ratchet.ErrInvalidMAC)
	if _, _, err := p.b.sess.Encrypt([]byte("still too early")); !errors.Is(err, ratchet.ErrNoSendingChain) {
		t.Fatalf("responder Encrypt after a failed first decrypt: %v", err)
	}
	advDeliver(t, p.b, m)
	reply := p.send(t, p.b)
	if reply.h.DH == p.bundleID {
		t.Fatal("the responder's first message uses its signed prekey as ratchet key")
	}
	advDeliver(t, p.a, reply)
	// The initiator can send from the start.
	if !p.a.sess.State.CanSend() {
		t.Fatal("initiator cannot send")
	}
}

func TestAdversarialRandomness(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "rand")
	m := s.newChain
	bad := bytes.Clone(m.ct)
	bad[20] ^= 0x80
	badN := m.h
	badN.N = advMaxSkip(ratchet.Limits{}) + 1
	badPN := m.h
	badPN.PN = 0 // below Nr
	for name, c := range map[string]struct {
		h    ratchet.Header
		ct   []byte
		want error
	}{
		"MAC fails after the DH step": {m.h, bad, ratchet.ErrInvalidMAC},
		"n too far on the new chain":  {badN, m.ct, ratchet.ErrTooManySkipped},
		"pn below Nr":                 {badPN, m.ct, ratchet.ErrMalformedMessage},
		"forged new key":              {ratchet.Header{DH: s.spk.Public, N: 0, PN: 2}, m.ct, ratchet.ErrInvalidMAC},
	} {
		t.Run(name, func(t *testing.T) {
			bob := advClone(t, s.b)
			pos := bob.rnd.pos
			advMustFail(t, bob, c.h, c.ct, c.want) // also checks the position
			if bob.rnd.pos != pos {
				t.Fatal("randomness drawn")
			}
		})
	}
	t.Run("entropy failure after authentication", func(t *testing.T) {
		bob := advClone(t, s.b)
		bob.rnd.fail = true
		err := advMustFail(t, bob, m.h, m.ct)
		if !errors.Is(err, keys.ErrRandomness) {
			t.Fatalf("err = %v, want ErrRandomness", err)
		}
		bob.rnd.fail = false
		advDeliver(t, bob, m)
	})
	t.Run("success draws one key", func(t *testing.T) {
		bob := advClone(t, s.b)
		pos := bob.rnd.pos
		advDeliver(t, bob, s.cur) // no DH step
		if bob.rnd.pos != pos {
			t.Fatal("a decrypt on the current chain drew randomness")
		}
		advDeliver(t, bob, m)
		if bob.rnd.pos-pos != keys.PrivateKeySize {
			t.Fatalf("a DH step drew %d bytes, want %d", bob.rnd.pos-pos, keys.PrivateKeySize)
		}
	})
}

func TestAdversarialForged(t *testing.T) {
	s := advBuildScene(t, ratchet.Limits{}, "forged")
	forge := newAdvRand("forger")
	st := &s.b.sess.State
	for i := range 24 {
		k, err := keys.GenerateKey(forge)
		if err != nil {
			t.Fatal(err)
		}
		ct := make([]byte, ratchet.Overhead+i*3)
		forge.Read(ct)
		var b [8]byte
		forge.Read(b[:])
		h := ratchet.Header{DH: k.Public, N: binary.LittleEndian.Uint32(b[:4]) % 8, PN: st.Nr + binary.LittleEndian.Uint32(b[4:])%4}
		switch i % 4 {
		case 1: // on the current chain
			h.DH, h.N = st.DHr, st.Nr+uint32(i%3)
		case 2: // on a stored key
			h = s.skipCur.h
		case 3: // on the closed chain's stored key
			h = s.skipOld.h
		}
		if i == 0 {
			h.N, h.PN = 0, st.Nr // the cheapest forgery: passes every check but the MAC
		}
		tg := s.targets()[i%len(s.targets())]
		s.advCase(t, tg.m, h, ct, ratchet.ErrInvalidMAC)
	}
	// A genuine ciphertext under a forged header.
	k, _ := keys.GenerateKey(forge)
	s.advCase(t, s.newChain, ratchet.Header{DH: k.Public, N: 0, PN: s.newChain.h.PN}, s.newChain.ct, ratchet.ErrInvalidMAC)
	// A genuine ciphertext under another genuine header.
	s.advCase(t, s.cur, s.ahead.h, s.cur.ct, ratchet.ErrInvalidMAC)
	s.advCase(t, s.skipCur, s.skipCur.h, s.cur.ct, ratchet.ErrInvalidMAC)
}

func TestAdversarialCounterLimits(t *testing.T) {
	p := advNewPair(t, ratchet.Limits{}, "counters")
	st := p.a.sess.State
	st.Ns = math.MaxUint32
	if _, _, _, err := ratchet.Encrypt(&st, []byte("x")); !errors.Is(err, ratchet.ErrCounterExhausted) {
		t.Fatalf("Encrypt at Ns = 2^32-1: %v", err)
	}
	if st.Ns != math.MaxUint32 {
		t.Fatal("Encrypt modified its input")
	}
	m := p.send(t, p.a)
	h := m.h
	h.N = math.MaxUint32
	advMustFail(t, p.b, h, m.ct, ratchet.ErrMalformedMessage)
	advDeliver(t, p.b, m)
	advDeliver(t, p.a, p.send(t, p.b))
	m = p.send(t, p.a)
	h = m.h
	h.N = math.MaxUint32
	advMustFail(t, p.b, h, m.ct, ratchet.ErrMalformedMessage)
	h = ratchet.Header{DH: p.b.sess.State.DHr, N: math.MaxUint32}
	advMustFail(t, p.b, h, m.ct, ratchet.ErrMalformedMessage)
	advDeliver(t, p.b, m)
}

// advIDs lists the stored key ids.
func advIDs(p *advPeer) []ratchet.KeyID {
	var out []ratchet.KeyID
	for _, k := range p.sess.Skipped.All() {
		out = append(out, k.KeyID)
	}
	return out
}

func advIDRange(key keys.PublicKey, from, to uint32) []ratchet.KeyID {
	var out []ratchet.KeyID
	for n := from; n < to; n++ {
		out = append(out, ratchet.KeyID{RatchetKey: key, N: n})
	}
	return out
}

func TestAdversarialRetentionCap(t *testing.T) {
	lim := ratchet.Limits{MaxSkip: 50, MaxMessageKeysPerSession: 3, MaxKeep: 1000}
	p := advNewPair(t, lim, "cap")
	m := p.sendN(t, p.a, 10) // n = 0..9
	if ev := advDeliver(t, p.b, m[9]); ev != 6 {
		t.Errorf("%d keys reported evicted, want 6", ev)
	}
	if got, want := advIDs(p.b), advIDRange(m[0].h.DH, 6, 9); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored %v, want the 3 newest %v", got, want)
	}
	for _, old := range m[:6] {
		advMustFail(t, p.b, old.h, old.ct, ratchet.ErrDuplicateMessage)
	}
	for _, kept := range m[6:9] {
		advDeliver(t, p.b, kept)
		advMustFail(t, p.b, kept.h, kept.ct, ratchet.ErrDuplicateMessage)
	}

	// Across chains: the cap holds at every step, and every message is
	// delivered at most once; a message whose key was evicted is a
	// duplicate, never a second plaintext and never a MAC failure.
	var pending []advMsg
	delivered := map[string]bool{}
	for round := range 6 {
		batch := p.sendN(t, p.a, 6)
		pending = append(pending, batch[:5]...)
		advDeliver(t, p.b, batch[5])
		delivered[string(batch[5].pt)] = true
		if p.b.sess.Skipped.Len() > 3 {
			t.Fatalf("round %d: %d keys", round, p.b.sess.Skipped.Len())
		}
		if round%2 == 0 && len(pending) > 0 { // one late message per other round
			late := pending[len(pending)-1]
			pending = pending[:len(pending)-1]
			advDeliver(t, p.b, late)
			delivered[string(late.pt)] = true
		}
		advDeliver(t, p.a, p.send(t, p.b))
	}
	var ok, dups int
	for i := len(pending) - 1; i >= 0; i-- {
		mm := pending[i]
		if _, stored := p.b.sess.Skipped.Lookup(ratchet.KeyID{RatchetKey: mm.h.DH, N: mm.h.N}); stored {
			advDeliver(t, p.b, mm)
			ok++
			continue
		}
		err := advMustFail(t, p.b, mm.h, mm.ct)
		if !errors.Is(err, ratchet.ErrDuplicateMessage) && !chainForgotten(p.b, mm.h.DH) {
			t.Errorf("evicted message %q: %v, want ErrDuplicateMessage", mm.pt, err)
		}
		dups++
	}
	if ok == 0 || dups == 0 {
		t.Errorf("late deliveries: %d ok, %d evicted; the scenario should have both", ok, dups)
	}
}

// chainForgotten: the chain of key is neither current nor remembered, so a
// message on it cannot be recognised as a duplicate.
func chainForgotten(p *advPeer, key keys.PublicKey) bool {
	if p.sess.State.DHr == key {
		return false
	}
	for _, c := range p.sess.State.Previous {
		if c.Key == key {
			return false
		}
	}
	return true
}

func TestAdversarialRetentionMaxKeep(t *testing.T) {
	lim := ratchet.Limits{MaxSkip: 50, MaxMessageKeysPerSession: 1000, MaxKeep: 5}
	t.Run("one chain", func(t *testing.T) {
		p := advNewPair(t, lim, "maxkeep")
		m := p.sendN(t, p.a, 12)
		key := m[0].h.DH
		// Keys n=0..8 get seq 0..8, m[9]'s key seq 9: KeysCount = 10, so
		// seq <= 5 goes.
		advDeliver(t, p.b, m[9])
		if got, want := advIDs(p.b), advIDRange(key, 6, 9); !reflect.DeepEqual(got, want) {
			t.Fatalf("after KeysCount 10: stored %v, want %v", got, want)
		}
		advDeliver(t, p.b, m[10]) // KeysCount 11: seq <= 6 goes
		if got, want := advIDs(p.b), advIDRange(key, 7, 9); !reflect.DeepEqual(got, want) {
			t.Fatalf("after KeysCount 11: stored %v, want %v", got, want)
		}
		advMustFail(t, p.b, m[6].h, m[6].ct, ratchet.ErrDuplicateMessage)
		advDeliver(t, p.b, m[11]) // KeysCount 12: seq <= 7 goes
		advMustFail(t, p.b, m[7].h, m[7].ct, ratchet.ErrDuplicateMessage)
		advDeliver(t, p.b, m[8])
		for _, old := range m[:9] {
			advMustFail(t, p.b, old.h, old.ct, ratchet.ErrDuplicateMessage)
		}
		if p.b.sess.Skipped.Len() != 0 {
			t.Fatal("keys left")
		}
	})
	t.Run("closed chain aged out", func(t *testing.T) {
		p := advNewPair(t, lim, "maxkeep-closed")
		x := p.sendN(t, p.a, 4)
		advDeliver(t, p.b, x[3]) // x0..x2 stored with seq 0..2, KeysCount 4
		if p.b.sess.Skipped.Len() != 3 {
			t.Fatalf("%d keys", p.b.sess.Skipped.Len())
		}
		advDeliver(t, p.a, p.send(t, p.b))
		y := p.sendN(t, p.a, 3) // new chain, pn = 4: nothing more to skip on KA1
		for i, m := range y {
			advDeliver(t, p.b, m) // KeysCount 5, 6, 7: x0, x1, x2 age out
			if got := p.b.sess.Skipped.Len(); got != 2-i {
				t.Fatalf("after y%d: %d keys, want %d", i, got, 2-i)
			}
		}
		for _, m := range x[:3] {
			advMustFail(t, p.b, m.h, m.ct, ratchet.ErrDuplicateMessage)
		}
	})
	t.Run("both limits, long run", func(t *testing.T) {
		lim := ratchet.Limits{MaxSkip: 20, MaxMessageKeysPerSession: 7, MaxKeep: 12}
		p := advNewPair(t, lim, "maxkeep-long")
		r := newAdvRand("schedule")
		var inflight []advMsg
		seen := map[string]bool{}
		var dups, tooMany, forgotten int
		for step := range 400 {
			var b [2]byte
			r.Read(b[:])
			if b[0]%3 != 0 || len(inflight) == 0 {
				inflight = append(inflight, p.send(t, p.a))
				continue
			}
			i := int(b[1]) % len(inflight)
			m := inflight[i]
			inflight = append(inflight[:i], inflight[i+1:]...)
			_, stored := p.b.sess.Skipped.Lookup(ratchet.KeyID{RatchetKey: m.h.DH, N: m.h.N})
			before := advSnapshot(t, p.b)
			res, _, err := p.b.sess.Decrypt(m.h, m.ct, p.b.rnd)
			if err == nil {
				if seen[string(m.pt)] || !bytes.Equal(res.Plaintext, m.pt) {
					t.Fatalf("step %d: %q delivered twice or wrong (%q)", step, m.pt, res.Plaintext)
				}
				seen[string(m.pt)] = true
				advCheckStore(t, p.b)
				if b[1]%4 == 0 { // Bob answers: Alice's next messages start a new chain
					advDeliver(t, p.a, p.send(t, p.b))
				}
				continue
			}
			if stored {
				t.Fatalf("step %d: %q failed with its key stored: %v", step, m.pt, err)
			}
			if !reflect.DeepEqual(before, advSnapshot(t, p.b)) {
				t.Fatalf("step %d: a failed decrypt (%v) changed the state", step, err)
			}
			switch {
			case errors.Is(err, ratchet.ErrDuplicateMessage):
				dups++
			case errors.Is(err, ratchet.ErrTooManySkipped):
				tooMany++
			case chainForgotten(p.b, m.h.DH):
				forgotten++
			default:
				t.Fatalf("step %d: %q: %v", step, m.pt, err)
			}
		}
		t.Logf("delivered %d, evicted (duplicate) %d, too far %d, forgotten chain %d", len(seen), dups, tooMany, forgotten)
		if dups == 0 {
			t.Error("the schedule never hit an evicted key")
		}
		if len(seen) == 0 {
			t.Fatal("nothing delivered")
		}
	})
}

// TestAdversarialSealOpen attacks the message cipher directly: every
// truncation below the overhead is malformed (Open checks the length itself,
// not only Decrypt), and every bit of the associated data (the 41-byte
// header encoding), the IV, the body and the tag is authenticated.
func TestAdversarialSealOpen(t *testing.T) {
	mk := ratchet.MessageKey(sha256.Sum256([]byte("mk")))
	h := ratchet.Header{N: 7, PN: 3}
	copy(h.DH[:], bytes.Repeat([]byte{0x02}, keys.PublicKeySize))
	ad := h.AD()
	pt := []byte("attack at dawn")
	ct := ratchet.Seal(mk, pt, ad[:])
	if len(ct) != len(pt)+ratchet.Overhead {
		t.Fatalf("sealed %d bytes", len(ct))
	}
	for l := range ratchet.Overhead {
		if out, err := ratchet.Open(mk, ct[:l], ad[:]); !errors.Is(err, ratchet.ErrMalformedMessage) || out != nil {
			t.Errorf("Open of %d bytes: %v", l, err)
		}
	}
	for bit := range len(ad) * 8 {
		bad := ad
		bad[bit/8] ^= 1 << (bit % 8)
		if _, err := ratchet.Open(mk, ct, bad[:]); !errors.Is(err, ratchet.ErrInvalidMAC) {
			t.Errorf("associated data bit %d: %v", bit, err)
		}
	}
	for bit := range len(ct) * 8 {
		bad := bytes.Clone(ct)
		bad[bit/8] ^= 1 << (bit % 8)
		if _, err := ratchet.Open(mk, bad, ad[:]); !errors.Is(err, ratchet.ErrInvalidMAC) {
			t.Errorf("ciphertext bit %d: %v", bit, err)
		}
	}
	other := mk
	other[31] ^= 1
	if _, err := ratchet.Open(other, ct, ad[:]); !errors.Is(err, ratchet.ErrInvalidMAC) {
		t.Errorf("wrong message key: %v", err)
	}
	if got, err := ratchet.Open(mk, ct, ad[:]); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// An empty plaintext seals to exactly the overhead and opens.
	empty := ratchet.Seal(mk, nil, ad[:])
	if got, err := ratchet.Open(mk, empty, ad[:]); len(empty) != ratchet.Overhead || err != nil || len(got) != 0 {
		t.Fatalf("empty plaintext: %d bytes, %q, %v", len(empty), got, err)
	}
}
