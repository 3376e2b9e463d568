package keys

import (
	"crypto/rand"
	"math/big"
	"testing"

	gethcrypto "github.com/ethereum/go-ethereum/crypto"
)

// scalarInRange (constant time, no math/big) agrees with math/big on the
// boundaries and on random values, and its n is secp256k1's.
func TestScalarInRange(t *testing.T) {
	n := gethcrypto.S256().Params().N
	if got := new(big.Int).SetBytes(curveOrder[:]); got.Cmp(n) != 0 {
		t.Fatalf("curveOrder is %x, want n = %x", got, n)
	}
	want := func(b []byte) bool {
		d := new(big.Int).SetBytes(b)
		return d.Sign() > 0 && d.Cmp(n) < 0
	}
	be := func(d *big.Int) []byte { return d.FillBytes(make([]byte, 32)) }
	one := big.NewInt(1)
	cases := [][]byte{
		make([]byte, 32), be(one), be(new(big.Int).Sub(n, one)), be(n), be(new(big.Int).Add(n, one)),
		be(new(big.Int).Sub(new(big.Int).Lsh(one, 256), one)), // 2^256 - 1
		be(new(big.Int).Lsh(one, 255)),
		be(new(big.Int).Sub(n, new(big.Int).Lsh(one, 64))), // differs from n-1 in a middle limb
		be(new(big.Int).Add(new(big.Int).Sub(n, new(big.Int).Lsh(one, 128)), one)),
	}
	for range 2000 {
		b := make([]byte, 32)
		rand.Read(b)
		if b[0]&1 == 0 {
			copy(b[:16], curveOrder[:16]) // near n, where the low limbs decide
		}
		cases = append(cases, b)
	}
	for _, b := range cases {
		if got := scalarInRange(b); got != want(b) {
			t.Fatalf("scalarInRange(%x) = %v, want %v", b, got, want(b))
		}
	}
	short, long := cases[2][1:], append([]byte{0}, cases[2]...) // n-1, one byte short; n-1 with a leading zero
	if scalarInRange(short) || scalarInRange(long) {
		t.Fatal("a scalar of the wrong length in range")
	}
	if a := testing.AllocsPerRun(100, func() { scalarInRange(cases[2]) }); a != 0 {
		t.Fatalf("scalarInRange allocates %v times", a)
	}
}
