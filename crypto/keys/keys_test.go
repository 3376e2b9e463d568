package keys_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"testing"

	"github.com/ratchetd/ratchetd/crypto/keys"
)

// secp256k1 domain parameters, written out so that the tests do not take
// them from the code under test.
var (
	fieldP  = mustBig("fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f")
	orderN  = mustBig("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
	halfN   = new(big.Int).Rsh(orderN, 1)
	curveB  = big.NewInt(7)
	kat0Pub = "022ed557f5ad336b31a49857e4e9664954ac33385aa20a93e2d64bfe7f08f51277" // Alice IK, 0x30×32 (status-compat.md §15 KAT-0)
)

func mustBig(h string) *big.Int {
	v, ok := new(big.Int).SetString(h, 16)
	if !ok {
		panic(h)
	}
	return v
}

func be32(v *big.Int) []byte {
	out := make([]byte, 32)
	v.FillBytes(out)
	return out
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func rep(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// onCurve reports whether x (< p) is the x-coordinate of a secp256k1 point:
// x³+7 must be a square mod p.
func onCurve(x *big.Int) bool {
	rhs := new(big.Int).Exp(x, big.NewInt(3), fieldP)
	rhs.Add(rhs, curveB).Mod(rhs, fieldP)
	return rhs.Sign() == 0 || big.Jacobi(rhs, fieldP) == 1
}

// offCurveX returns the smallest x ≥ from that is not on the curve.
func offCurveX(from int64) *big.Int {
	for x := big.NewInt(from); ; x.Add(x, big.NewInt(1)) {
		if !onCurve(x) {
			return new(big.Int).Set(x)
		}
	}
}

func compressed(prefix byte, x []byte) []byte { return append([]byte{prefix}, x...) }

func newKey(t testing.TB) keys.KeyPair {
	t.Helper()
	kp, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestParsePublicKeyRejects(t *testing.T) {
	valid := mustHex(kat0Pub)
	uncompressed, err := keys.PublicKey(valid).Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	offX := be32(offCurveX(1))
	cases := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"len0", []byte{}},
		{"len1", []byte{0x02}},
		{"len32", valid[:32]},
		{"len32 x only", valid[1:]},
		{"len34", append(append([]byte{}, valid...), 0x00)},
		{"len65 uncompressed", uncompressed[:]},
		{"len64", uncompressed[1:]},
		{"prefix 0x00", compressed(0x00, valid[1:])},
		{"prefix 0x01", compressed(0x01, valid[1:])},
		{"prefix 0x04", compressed(0x04, valid[1:])},
		{"prefix 0x05", compressed(0x05, valid[1:])},
		{"prefix 0x06", compressed(0x06, valid[1:])},
		{"prefix 0x07", compressed(0x07, valid[1:])},
		{"prefix 0xff", compressed(0xff, valid[1:])},
		{"all zero", make([]byte, 33)},
		{"x not on curve 02", compressed(0x02, offX)},
		{"x not on curve 03", compressed(0x03, offX)},
		{"x = p", compressed(0x02, be32(fieldP))},
		{"x = p 03", compressed(0x03, be32(fieldP))},
		{"x = p+1", compressed(0x02, be32(new(big.Int).Add(fieldP, big.NewInt(1))))},
		{"x = 2^256-1", compressed(0x02, rep(0xff, 32))},
		{"x = 2^256-1 03", compressed(0x03, rep(0xff, 32))},
	}
	// x+p for the smallest on-curve x still fits in 256 bits; it names the
	// same point mod p but is not a canonical field element.
	for x := int64(1); ; x++ {
		if onCurve(big.NewInt(x)) {
			alias := new(big.Int).Add(fieldP, big.NewInt(x))
			if _, err := keys.ParsePublicKey(compressed(0x02, be32(big.NewInt(x)))); err != nil {
				t.Fatalf("x=%d is on the curve but does not parse: %v", x, err)
			}
			cases = append(cases, struct {
				name string
				in   []byte
			}{fmt.Sprintf("x = p+%d (non-canonical alias of a valid x)", x), compressed(0x02, be32(alias))})
			break
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pk, err := keys.ParsePublicKey(c.in)
			if !errors.Is(err, keys.ErrInvalidKey) {
				t.Fatalf("ParsePublicKey(%x) = %x, %v; want ErrInvalidKey", c.in, pk, err)
			}
			if !pk.IsZero() {
				t.Errorf("a rejected key returned a non-zero value %x", pk)
			}
		})
	}
}

// TestParsePublicKeyMatchesCurveEquation checks ParsePublicKey against the
// curve equation for the first x values with both prefixes: it must accept
// exactly the x that have a square root of x³+7.
func TestParsePublicKeyMatchesCurveEquation(t *testing.T) {
	var on, off int
	for x := int64(0); x < 64; x++ {
		xb := be32(big.NewInt(x))
		want := onCurve(big.NewInt(x))
		for _, prefix := range []byte{0x02, 0x03} {
			_, err := keys.ParsePublicKey(compressed(prefix, xb))
			if want && err != nil {
				t.Errorf("x=%d prefix %02x: on the curve, rejected: %v", x, prefix, err)
			}
			if !want && !errors.Is(err, keys.ErrInvalidKey) {
				t.Errorf("x=%d prefix %02x: not on the curve, err = %v", x, prefix, err)
			}
		}
		if want {
			on++
		} else {
			off++
		}
	}
	if on == 0 || off == 0 {
		t.Fatalf("degenerate sample: %d on, %d off", on, off)
	}
}

func TestParsePublicKeyAcceptsBothParities(t *testing.T) {
	for i := range 8 {
		kp := newKey(t)
		for _, prefix := range []byte{0x02, 0x03} {
			b := compressed(prefix, kp.Public[1:])
			pk, err := keys.ParsePublicKey(b)
			if err != nil {
				t.Fatalf("key %d prefix %02x: %v", i, prefix, err)
			}
			if !bytes.Equal(pk[:], b) {
				t.Fatalf("parsed %x, want %x", pk, b)
			}
		}
	}
}

func TestParsePrivateKeyRejects(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"len0", []byte{}},
		{"len31", rep(0x11, 31)},
		{"len33", rep(0x11, 33)},
		{"len64", rep(0x11, 64)},
		{"zero", make([]byte, 32)},
		{"n", be32(orderN)},
		{"n+1", be32(new(big.Int).Add(orderN, big.NewInt(1)))},
		{"n+2^100", be32(new(big.Int).Add(orderN, new(big.Int).Lsh(big.NewInt(1), 100)))},
		{"all 0xff", rep(0xff, 32)},
		{"p", be32(fieldP)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sk, err := keys.ParsePrivateKey(c.in)
			if !errors.Is(err, keys.ErrInvalidKey) {
				t.Fatalf("ParsePrivateKey(%x) err = %v; want ErrInvalidKey", c.in, err)
			}
			if !sk.IsZero() {
				t.Error("a rejected key returned a non-zero value")
			}
		})
	}
	// The boundaries that must be accepted.
	for _, v := range []*big.Int{big.NewInt(1), new(big.Int).Sub(orderN, big.NewInt(1)), halfN} {
		if _, err := keys.ParsePrivateKey(be32(v)); err != nil {
			t.Errorf("ParsePrivateKey(%x): %v", be32(v), err)
		}
	}
}

// TestInvalidScalarsRejectedEverywhere: a PrivateKey value built without
// ParsePrivateKey must still be refused by every operation.
func TestInvalidScalarsRejectedEverywhere(t *testing.T) {
	peer := newKey(t)
	for _, raw := range [][]byte{make([]byte, 32), be32(orderN), rep(0xff, 32)} {
		sk := keys.PrivateKey(raw)
		if _, err := keys.ECDH(sk, peer.Public); !errors.Is(err, keys.ErrInvalidKey) {
			t.Errorf("ECDH with scalar %x: err = %v", raw, err)
		}
		if _, err := sk.Public(); !errors.Is(err, keys.ErrInvalidKey) {
			t.Errorf("Public of scalar %x: err = %v", raw, err)
		}
		if _, err := keys.Sign(sk, [32]byte{1}); !errors.Is(err, keys.ErrInvalidKey) {
			t.Errorf("Sign with scalar %x: err = %v", raw, err)
		}
	}
	sk := newKey(t).Private
	for _, pub := range []keys.PublicKey{{}, keys.PublicKey(compressed(0x02, be32(offCurveX(1)))), keys.PublicKey(compressed(0x02, be32(fieldP)))} {
		if _, err := keys.ECDH(sk, pub); !errors.Is(err, keys.ErrInvalidKey) {
			t.Errorf("ECDH with public %x: err = %v", pub, err)
		}
		if _, err := pub.Uncompressed(); !errors.Is(err, keys.ErrInvalidKey) {
			t.Errorf("Uncompressed of %x: err = %v", pub, err)
		}
	}
}

func TestECDHSymmetric(t *testing.T) {
	for i := range 16 {
		a, b := newKey(t), newKey(t)
		ab, err := keys.ECDH(a.Private, b.Public)
		if err != nil {
			t.Fatal(err)
		}
		ba, err := keys.ECDH(b.Private, a.Public)
		if err != nil {
			t.Fatal(err)
		}
		if ab != ba {
			t.Fatalf("round %d: ECDH not symmetric: %x vs %x", i, ab, ba)
		}
		if ab == ([keys.SharedSize]byte{}) {
			t.Fatal("zero shared secret")
		}
		// The other parity of b's point is -B: the x-coordinate of a·(-B)
		// equals that of a·B.
		neg := b.Public
		neg[0] ^= 0x01
		an, err := keys.ECDH(a.Private, neg)
		if err != nil {
			t.Fatal(err)
		}
		if an != ab {
			t.Fatalf("ECDH with -B differs in x: %x vs %x", an, ab)
		}
		c := newKey(t)
		ac, err := keys.ECDH(a.Private, c.Public)
		if err != nil {
			t.Fatal(err)
		}
		if ac == ab {
			t.Fatal("ECDH with different peers gave the same secret")
		}
	}
}

// scripted is a reader that yields the given chunks and then io.EOF, and
// records how much was read.
type scripted struct {
	r    *bytes.Reader
	read int
}

func newScripted(chunks ...[]byte) *scripted {
	return &scripted{r: bytes.NewReader(bytes.Join(chunks, nil))}
}

func (s *scripted) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.read += n
	return n, err
}

func TestGenerateKeyRedrawsOutOfRange(t *testing.T) {
	valid := rep(0x30, 32) // KAT-0 Alice IK
	for _, c := range []struct {
		name  string
		draws [][]byte
	}{
		{"valid first", nil},
		{"zero then valid", [][]byte{make([]byte, 32)}},
		{"n then valid", [][]byte{be32(orderN)}},
		{"n+1 then valid", [][]byte{be32(new(big.Int).Add(orderN, big.NewInt(1)))}},
		{"0xff.. then valid", [][]byte{rep(0xff, 32)}},
		{"zero, n, 0xff.. then valid", [][]byte{make([]byte, 32), be32(orderN), rep(0xff, 32)}},
		{"7 bad then valid", [][]byte{make([]byte, 32), be32(orderN), rep(0xff, 32), make([]byte, 32), be32(orderN), rep(0xff, 32), make([]byte, 32)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newScripted(append(append([][]byte{}, c.draws...), valid, rep(0x31, 32))...)
			kp, err := keys.GenerateKey(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(kp.Private[:], valid) {
				t.Fatalf("GenerateKey returned another scalar")
			}
			if kp.Public.String() != kat0Pub {
				t.Fatalf("public %s, want %s", kp.Public, kat0Pub)
			}
			if want := 32 * (len(c.draws) + 1); r.read != want {
				t.Errorf("read %d bytes, want %d", r.read, want)
			}
		})
	}
}

func TestGenerateKeyRandomnessFailure(t *testing.T) {
	var eight [][]byte
	for range 8 {
		eight = append(eight, be32(orderN))
	}
	for _, c := range []struct {
		name string
		r    io.Reader
	}{
		{"empty", newScripted()},
		{"short 1", newScripted([]byte{1})},
		{"short 31", newScripted(rep(0x30, 31))},
		{"bad then short", newScripted(make([]byte, 32), rep(0x30, 16))},
		{"8 out of range", newScripted(append(eight, rep(0x30, 32))...)},
		{"error", iotestErr{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			kp, err := keys.GenerateKey(c.r)
			if !errors.Is(err, keys.ErrRandomness) {
				t.Fatalf("err = %v, want ErrRandomness", err)
			}
			if !kp.Private.IsZero() || !kp.Public.IsZero() {
				t.Error("a failed GenerateKey returned a key")
			}
		})
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("entropy source broken") }

func digestOf(s string) [32]byte { return keys.Keccak256([]byte(s)) }

func TestSignVerifyRoundTrip(t *testing.T) {
	for i := range 16 {
		kp := newKey(t)
		d := digestOf(fmt.Sprint("message ", i))
		sig, err := keys.Sign(kp.Private, d)
		if err != nil {
			t.Fatal(err)
		}
		if sig[64] > 1 {
			t.Errorf("V = %d, want 0 or 1", sig[64])
		}
		if s := new(big.Int).SetBytes(sig[32:64]); s.Cmp(halfN) > 0 {
			t.Errorf("Sign produced high S")
		}
		if err := keys.Verify(kp.Public, d, sig[:]); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		again, err := keys.Sign(kp.Private, d)
		if err != nil || again != sig {
			t.Errorf("Sign is not deterministic (RFC 6979): %x vs %x, %v", again, sig, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	kp := newKey(t)
	other := newKey(t)
	d := digestOf("bundle material")
	sig, err := keys.Sign(kp.Private, d)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(s []byte)) []byte {
		s := append([]byte{}, sig[:]...)
		f(s)
		return s
	}
	// The high-S twin: (r, n-s) with V flipped is a valid ECDSA signature of
	// the same key and digest, which Status (and we) must refuse.
	highS := mod(func(s []byte) {
		sv := new(big.Int).SetBytes(s[32:64])
		copy(s[32:64], be32(new(big.Int).Sub(orderN, sv)))
		s[64] ^= 1
	})
	type tc struct {
		name   string
		pub    keys.PublicKey
		digest [32]byte
		sig    []byte
	}
	cases := []tc{
		{"wrong key", other.Public, d, sig[:]},
		{"other parity of the key", keys.PublicKey(compressed(kp.Public[0]^1, kp.Public[1:])), d, sig[:]},
		{"wrong digest", kp.Public, digestOf("bundle materiaL"), sig[:]},
		{"zero digest", kp.Public, [32]byte{}, sig[:]},
		{"nil sig", kp.Public, d, nil},
		{"len 0", kp.Public, d, []byte{}},
		{"len 64 (no V)", kp.Public, d, sig[:64]},
		{"len 66", kp.Public, d, append(append([]byte{}, sig[:]...), 0)},
		{"V+27", kp.Public, d, mod(func(s []byte) { s[64] += 27 })},
		{"V=27", kp.Public, d, mod(func(s []byte) { s[64] = 27 })},
		{"V=28", kp.Public, d, mod(func(s []byte) { s[64] = 28 })},
		{"V=2", kp.Public, d, mod(func(s []byte) { s[64] = 2 })},
		{"V=3", kp.Public, d, mod(func(s []byte) { s[64] = 3 })},
		{"V=4", kp.Public, d, mod(func(s []byte) { s[64] = 4 })},
		{"V flipped", kp.Public, d, mod(func(s []byte) { s[64] ^= 1 })},
		{"high-S twin", kp.Public, d, highS},
		{"r=0", kp.Public, d, mod(func(s []byte) { clear(s[:32]) })},
		{"s=0", kp.Public, d, mod(func(s []byte) { clear(s[32:64]) })},
		{"r=n", kp.Public, d, mod(func(s []byte) { copy(s[:32], be32(orderN)) })},
		{"s=n", kp.Public, d, mod(func(s []byte) { copy(s[32:64], be32(orderN)) })},
		{"s=n/2+1", kp.Public, d, mod(func(s []byte) { copy(s[32:64], be32(new(big.Int).Add(halfN, big.NewInt(1)))) })},
		{"r=s=0xff..", kp.Public, d, mod(func(s []byte) { copy(s[:64], rep(0xff, 64)) })},
		{"all zero", kp.Public, d, make([]byte, 65)},
	}
	for bit := range 65 * 8 {
		cases = append(cases, tc{fmt.Sprintf("bit %d", bit), kp.Public, d, mod(func(s []byte) { s[bit/8] ^= 1 << (bit % 8) })})
	}
	for _, c := range cases {
		if err := keys.Verify(c.pub, c.digest, c.sig); !errors.Is(err, keys.ErrBadSignature) {
			t.Errorf("%s: Verify = %v, want ErrBadSignature", c.name, err)
		}
	}
	if len(cases) < 520 {
		t.Fatalf("only %d cases", len(cases))
	}
	// The twin really is a valid signature apart from its S: with S
	// restored it verifies.
	if err := keys.Verify(kp.Public, d, sig[:]); err != nil {
		t.Fatalf("the genuine signature no longer verifies: %v", err)
	}
	// An invalid public key is refused, whatever the signature.
	if err := keys.Verify(keys.PublicKey{}, d, sig[:]); err == nil {
		t.Error("Verify accepted a signature for the zero public key")
	}
}

// TestPrivateKeyFormattingRedacted: the string verbs (and %v/%#v, directly
// and inside a KeyPair or a pointer) never show the secret.
func TestPrivateKeyFormattingRedacted(t *testing.T) {
	kp := newKey(t)
	secretHex := hex.EncodeToString(kp.Private[:])
	secretHexUpper := strings.ToUpper(secretHex)
	checks := map[string]string{
		"String":   kp.Private.String(),
		"GoString": kp.Private.GoString(),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "% x"} {
		checks["PrivateKey "+verb] = fmt.Sprintf(verb, kp.Private)
		checks["*PrivateKey "+verb] = fmt.Sprintf(verb, &kp.Private)
		checks["KeyPair "+verb] = fmt.Sprintf(verb, kp)
		checks["*KeyPair "+verb] = fmt.Sprintf(verb, &kp)
		checks["[]PrivateKey "+verb] = fmt.Sprintf(verb, []keys.PrivateKey{kp.Private})
	}
	checks["Sprint"] = fmt.Sprint(kp.Private, kp)
	checks["Sprintln"] = fmt.Sprintln(kp.Private, kp)
	for name, s := range checks {
		if strings.Contains(s, secretHex) || strings.Contains(s, secretHexUpper) {
			t.Errorf("%s prints the secret: %s", name, s)
		}
		if strings.Contains(s, fmt.Sprint([32]byte(kp.Private))) {
			t.Errorf("%s prints the secret bytes: %s", name, s)
		}
	}
	if !strings.Contains(fmt.Sprintf("%v", kp), kp.Public.String()) {
		t.Errorf("KeyPair formatted with %%v should still show the public key")
	}
}

// TestBug_PrivateKeyNonStringVerbsLeakSecret: PrivateKey implements
// Stringer and GoStringer but not fmt.Formatter, so the verbs fmt does not
// route to String (%d, %o, %b, %c, %U ...) print the raw scalar bytes. A
// log line such as log.Printf("%d", kp) leaks the key. Implementing
// Format(fmt.State, rune) on PrivateKey would redact every verb.
func TestPrivateKeyNoVerbLeaksSecret(t *testing.T) {
	kp := newKey(t)
	raw := [32]byte(kp.Private)
	for _, verb := range []string{"%d", "%o", "%b"} {
		if got := fmt.Sprintf(verb, kp.Private); got == fmt.Sprintf(verb, raw) {
			t.Errorf("fmt %s of a PrivateKey prints the secret scalar bytes: %s", verb, got)
		}
	}
	if got := fmt.Sprintf("%d", kp); strings.Contains(got, strings.Trim(fmt.Sprintf("%d", raw), "[]")) {
		t.Errorf("fmt %%d of a KeyPair prints the secret scalar bytes: %s", got)
	}
}

func TestPublicKeyHelpers(t *testing.T) {
	kp := newKey(t)
	if kp.Public.String() != hex.EncodeToString(kp.Public[:]) {
		t.Error("PublicKey.String is not the compressed hex")
	}
	u, err := kp.Public.Uncompressed()
	if err != nil || u[0] != 0x04 || !bytes.Equal(u[1:33], kp.Public[1:]) || u[64]&1 != kp.Public[0]&1 {
		t.Errorf("Uncompressed = %x, %v", u, err)
	}
	if !kp.Public.Equal(kp.Public) || kp.Public.Equal(newKey(t).Public) {
		t.Error("Equal")
	}
	if !(keys.PublicKey{}).IsZero() || kp.Public.IsZero() || !(keys.PrivateKey{}).IsZero() || kp.Private.IsZero() {
		t.Error("IsZero")
	}
	again, err := kp.Private.KeyPair()
	if err != nil || again != kp {
		t.Errorf("KeyPair() round trip: %v", err)
	}
}
