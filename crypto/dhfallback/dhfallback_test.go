package dhfallback_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/ratchetd/ratchetd/crypto/dhfallback"
	"github.com/ratchetd/ratchetd/crypto/keys"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func scalarKey(t testing.TB, fill byte) keys.KeyPair {
	t.Helper()
	sk, err := keys.ParsePrivateKey(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := sk.KeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newKey(t testing.TB) keys.KeyPair {
	t.Helper()
	kp, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// KAT-10 of status-compat.md §15: EK = 0x41×32 to Bob's IK (0x32×32).
var (
	kat10Nonce   = mustHex("000102030405060708090a0b")
	kat10Payload = mustHex("284ae79d641ae761f4fd19813ca765fcde025faee7262116d799000102030405060708090a0b")
)

// scripted yields its bytes, then io.EOF; it records how much was read.
type scripted struct {
	r    *bytes.Reader
	read int
}

func script(chunks ...[]byte) *scripted {
	return &scripted{r: bytes.NewReader(bytes.Join(chunks, nil))}
}

func (s *scripted) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.read += n
	return n, err
}

func TestRoundTrip(t *testing.T) {
	bob := newKey(t)
	for _, pt := range [][]byte{
		[]byte("dh payload"),
		{0},
		bytes.Repeat([]byte{0xa5}, 15),
		bytes.Repeat([]byte{0x5a}, 16),
		bytes.Repeat([]byte{0x33}, 17),
		bytes.Repeat([]byte("x"), 4096),
	} {
		ek, payload, err := dhfallback.Seal(rand.Reader, bob.Public, pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(payload) != len(pt)+dhfallback.Overhead {
			t.Errorf("payload is %d bytes for %d of plaintext", len(payload), len(pt))
		}
		got, err := dhfallback.Open(bob.Private, ek, payload)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("round trip: got %x", got)
		}
		if bytes.Contains(payload, pt) && len(pt) > 4 {
			t.Error("the payload contains the plaintext")
		}
	}
}

func TestEmptyPlaintext(t *testing.T) {
	bob := newKey(t)
	for _, pt := range [][]byte{nil, {}} {
		ek, payload, err := dhfallback.Seal(rand.Reader, bob.Public, pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(payload) != dhfallback.Overhead {
			t.Fatalf("payload is %d bytes, want %d", len(payload), dhfallback.Overhead)
		}
		got, err := dhfallback.Open(bob.Private, ek, payload)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || len(got) != 0 {
			t.Fatalf("Open = %#v, want a non-nil empty slice", got)
		}
	}
}

func TestKAT10(t *testing.T) {
	bob, ek := scalarKey(t, 0x32), scalarKey(t, 0x41)
	r := script(bytes.Repeat([]byte{0x41}, 32), kat10Nonce)
	pub, payload, err := dhfallback.Seal(r, bob.Public, []byte("dh payload"))
	if err != nil {
		t.Fatal(err)
	}
	if pub != ek.Public || !bytes.Equal(payload, kat10Payload) {
		t.Fatalf("Seal = %x, %x", pub[:], payload)
	}
	if pt, err := dhfallback.Open(bob.Private, ek.Public, kat10Payload); err != nil || string(pt) != "dh payload" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
}

func TestTruncated(t *testing.T) {
	bob, ek := scalarKey(t, 0x32), scalarKey(t, 0x41)
	key, err := keys.ECDH(ek.Private, bob.Public)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < dhfallback.Overhead; n++ {
		short := kat10Payload[:n]
		if n > len(kat10Payload) {
			t.Fatal("payload too short for the table")
		}
		if pt, err := dhfallback.Open(bob.Private, ek.Public, short); !errors.Is(err, dhfallback.ErrMalformedPayload) || pt != nil {
			t.Errorf("Open of %d bytes = %x, %v; want ErrMalformedPayload", n, pt, err)
		}
		if pt, err := dhfallback.OpenWithKey(key, short); !errors.Is(err, dhfallback.ErrMalformedPayload) || pt != nil {
			t.Errorf("OpenWithKey of %d bytes = %x, %v; want ErrMalformedPayload", n, pt, err)
		}
	}
	// Cut anywhere above the minimum: well-formed, but the tag fails.
	for n := dhfallback.Overhead; n < len(kat10Payload); n++ {
		if _, err := dhfallback.Open(bob.Private, ek.Public, kat10Payload[:n]); !errors.Is(err, dhfallback.ErrDecrypt) {
			t.Errorf("Open of %d bytes: %v; want ErrDecrypt", n, err)
		}
	}
	// A malformed payload is refused before any key agreement: even an
	// invalid ephemeral key gives ErrMalformedPayload.
	if _, err := dhfallback.Open(bob.Private, keys.PublicKey{}, kat10Payload[:5]); !errors.Is(err, dhfallback.ErrMalformedPayload) {
		t.Errorf("short payload, bad key: %v", err)
	}
}

func TestEveryBitFlipped(t *testing.T) {
	bob, ek := scalarKey(t, 0x32), scalarKey(t, 0x41)
	for bit := range len(kat10Payload) * 8 {
		p := bytes.Clone(kat10Payload)
		p[bit/8] ^= 1 << (bit % 8)
		if pt, err := dhfallback.Open(bob.Private, ek.Public, p); !errors.Is(err, dhfallback.ErrDecrypt) || pt != nil {
			t.Errorf("bit %d: Open = %q, %v; want ErrDecrypt", bit, pt, err)
		}
	}
	// Appending or prepending a byte moves the nonce / tag.
	for name, p := range map[string][]byte{
		"appended":  append(bytes.Clone(kat10Payload), 0),
		"prepended": append([]byte{0}, kat10Payload...),
	} {
		if _, err := dhfallback.Open(bob.Private, ek.Public, p); !errors.Is(err, dhfallback.ErrDecrypt) {
			t.Errorf("%s: %v; want ErrDecrypt", name, err)
		}
	}
	if _, err := dhfallback.Open(bob.Private, ek.Public, kat10Payload); err != nil {
		t.Fatalf("the genuine payload: %v", err)
	}
}

func TestWrongKeys(t *testing.T) {
	bob, ek := scalarKey(t, 0x32), scalarKey(t, 0x41)
	alice := scalarKey(t, 0x30)
	negEK := ek.Public
	negEK[0] ^= 1 // -EK: same x-coordinate, so the same AES key
	cases := []struct {
		name string
		id   keys.PrivateKey
		ek   keys.PublicKey
		want error
	}{
		{"wrong recipient", alice.Private, ek.Public, dhfallback.ErrDecrypt},
		{"sender's ephemeral as recipient", ek.Private, ek.Public, dhfallback.ErrDecrypt},
		{"wrong ephemeral", bob.Private, alice.Public, dhfallback.ErrDecrypt},
		{"ephemeral = recipient's own key", bob.Private, bob.Public, dhfallback.ErrDecrypt},
		{"zero ephemeral", bob.Private, keys.PublicKey{}, keys.ErrInvalidKey},
		{"zero recipient key", keys.PrivateKey{}, ek.Public, keys.ErrInvalidKey},
	}
	for _, c := range cases {
		if pt, err := dhfallback.Open(c.id, c.ek, kat10Payload); !errors.Is(err, c.want) || pt != nil {
			t.Errorf("%s: Open = %q, %v; want %v", c.name, pt, err, c.want)
		}
	}
	// DH keeps only the x-coordinate, so the negated ephemeral key opens the
	// payload too (as in Status); the GCM tag is what authenticates.
	if pt, err := dhfallback.Open(bob.Private, negEK, kat10Payload); err != nil || string(pt) != "dh payload" {
		t.Errorf("-EK: %q, %v", pt, err)
	}
	// A fresh payload to one recipient does not open for another.
	other := newKey(t)
	pub, payload, err := dhfallback.Seal(rand.Reader, other.Public, []byte("for other"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dhfallback.Open(bob.Private, pub, payload); !errors.Is(err, dhfallback.ErrDecrypt) {
		t.Errorf("payload for another recipient: %v", err)
	}
}

func TestSealNonce(t *testing.T) {
	bob := scalarKey(t, 0x32)
	ekPriv := bytes.Repeat([]byte{0x41}, 32)
	zero := make([]byte, dhfallback.NonceSize)
	for _, c := range []struct {
		name  string
		zeros int
	}{{"no zero nonce", 0}, {"one zero nonce redrawn", 1}, {"three zero nonces redrawn", 3}} {
		t.Run(c.name, func(t *testing.T) {
			chunks := [][]byte{ekPriv}
			for range c.zeros {
				chunks = append(chunks, zero)
			}
			chunks = append(chunks, kat10Nonce, bytes.Repeat([]byte{0xee}, 64))
			r := script(chunks...)
			_, payload, err := dhfallback.Seal(r, bob.Public, []byte("dh payload"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(payload, kat10Payload) {
				t.Fatalf("payload %x, want the KAT-10 payload (nonce redrawn after %d zero nonces)", payload, c.zeros)
			}
			if want := 32 + (c.zeros+1)*dhfallback.NonceSize; r.read != want {
				t.Errorf("read %d bytes, want %d", r.read, want)
			}
		})
	}
	for _, c := range []struct {
		name string
		r    *scripted
	}{
		{"empty reader", script()},
		{"no nonce", script(ekPriv)},
		{"short nonce", script(ekPriv, kat10Nonce[:11])},
		{"only zero nonces", script(ekPriv, zero, zero)},
	} {
		pub, payload, err := dhfallback.Seal(c.r, bob.Public, []byte("x"))
		if !errors.Is(err, keys.ErrRandomness) || payload != nil || !pub.IsZero() {
			t.Errorf("%s: Seal = %x, %x, %v; want ErrRandomness", c.name, pub[:], payload, err)
		}
	}
	if _, _, err := dhfallback.Seal(rand.Reader, keys.PublicKey{}, []byte("x")); !errors.Is(err, keys.ErrInvalidKey) {
		t.Errorf("Seal to the zero key: %v", err)
	}
}

func TestSealWithKeyLayout(t *testing.T) {
	var key [keys.SharedSize]byte
	copy(key[:], mustHex("79038168a5f6b0772b48f0ee3fa2ea64f8713e734668ab6b17b164a884c216e3"))
	p, err := dhfallback.SealWithKey(key, [dhfallback.NonceSize]byte(kat10Nonce), []byte("dh payload"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, kat10Payload) {
		t.Fatalf("SealWithKey = %x", p)
	}
	if !bytes.Equal(p[len(p)-dhfallback.NonceSize:], kat10Nonce) {
		t.Error("the nonce is not the last 12 bytes")
	}
	key[0] ^= 1
	if _, err := dhfallback.OpenWithKey(key, p); !errors.Is(err, dhfallback.ErrDecrypt) {
		t.Errorf("wrong key: %v", err)
	}
}
