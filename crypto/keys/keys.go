// Package keys holds ratchetd's secp256k1 key types and the primitives built
// directly on them: key generation from an injected source, ECDH as Status
// computes it, Keccak-256, and recoverable signatures.
//
// Status uses secp256k1 for every key of the secure transport, the Double
// Ratchet's included, with 33-byte compressed public keys on the wire and
// 32-byte big-endian private scalars (status-compat.md §2). Keys are parsed
// once at the edge with full validation; past the edge only the fixed-size
// types below travel.
//
// The package is pure: no goroutines, no clocks, no I/O, and randomness only
// through the io.Reader a caller passes in.
package keys

import (
	"crypto/ecdsa"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/bits"

	gethcrypto "github.com/ethereum/go-ethereum/crypto"
)

// Sizes of the encodings used on the wire (status-compat.md §2).
const (
	PublicKeySize  = 33 // SEC1 compressed: 0x02/0x03 || X
	PrivateKeySize = 32 // big-endian scalar
	SharedSize     = 32 // ECDH output: the x-coordinate
	SignatureSize  = 65 // R || S || V
)

// Errors. Each is wrapped with context; match with errors.Is.
var (
	// ErrInvalidKey: a public or private key that is not a valid secp256k1 key
	// (wrong length, bad prefix, not on the curve, scalar out of [1, n-1]).
	ErrInvalidKey = errors.New("keys: invalid key")
	// ErrInvalidSharedSecret: an ECDH that failed or produced an all-zero value.
	ErrInvalidSharedSecret = errors.New("keys: invalid shared secret")
	// ErrBadSignature: a signature that is malformed or does not verify.
	ErrBadSignature = errors.New("keys: bad signature")
	// ErrRandomness: the injected random source failed.
	ErrRandomness = errors.New("keys: random source failed")
)

// PublicKey is a compressed secp256k1 public key. A PublicKey obtained from
// ParsePublicKey or PrivateKey.Public is always a valid curve point.
type PublicKey [PublicKeySize]byte

// PrivateKey is a secp256k1 scalar in [1, n-1], big-endian.
type PrivateKey [PrivateKeySize]byte

// KeyPair is a private key with its public key, computed once.
type KeyPair struct {
	Private PrivateKey
	Public  PublicKey
}

var (
	curveN     = gethcrypto.S256().Params().N
	halfCurveN = new(big.Int).Rsh(curveN, 1)
)

// ParsePublicKey validates a 33-byte compressed key: the length, the 0x02/0x03
// prefix and that X is the x-coordinate of a curve point (the point at
// infinity has no compressed encoding).
func ParsePublicKey(b []byte) (PublicKey, error) {
	var pk PublicKey
	if len(b) != PublicKeySize {
		return pk, fmt.Errorf("%w: public key is %d bytes, want %d", ErrInvalidKey, len(b), PublicKeySize)
	}
	if b[0] != 0x02 && b[0] != 0x03 {
		return pk, fmt.Errorf("%w: public key prefix 0x%02x", ErrInvalidKey, b[0])
	}
	copy(pk[:], b)
	if _, ok := validKeys.get(pk); ok {
		return pk, nil
	}
	if _, err := gethcrypto.DecompressPubkey(b); err != nil {
		return PublicKey{}, fmt.Errorf("%w: public key not on the curve", ErrInvalidKey)
	}
	validKeys.add(pk, struct{}{})
	return pk, nil
}

// ParsePrivateKey validates a 32-byte scalar in [1, n-1] (status-compat.md §2).
func ParsePrivateKey(b []byte) (PrivateKey, error) {
	var sk PrivateKey
	if len(b) != PrivateKeySize {
		return sk, fmt.Errorf("%w: private key is %d bytes, want %d", ErrInvalidKey, len(b), PrivateKeySize)
	}
	if !scalarInRange(b) {
		return sk, fmt.Errorf("%w: private key out of range", ErrInvalidKey)
	}
	copy(sk[:], b)
	return sk, nil
}

// curveOrder is n, the order of secp256k1's group, big-endian (SEC 2
// §2.4.1).
var curveOrder = [PrivateKeySize]byte{
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
	0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
}

// scalarInRange reports whether the 32-byte big-endian b is in [1, n-1], in
// constant time and without allocating: it checks private keys, whose value
// must not show in timing (it was a math/big comparison, variable-time and
// two allocations, on every ECDH and signature).
func scalarInRange(b []byte) bool {
	if len(b) != PrivateKeySize {
		return false
	}
	// b < n exactly when b - n borrows; least significant limb first.
	var borrow uint64
	for i := PrivateKeySize - 8; i >= 0; i -= 8 {
		_, borrow = bits.Sub64(binary.BigEndian.Uint64(b[i:]), binary.BigEndian.Uint64(curveOrder[i:]), borrow)
	}
	var set byte // the OR of every byte: zero only for b = 0
	for _, c := range b {
		set |= c
	}
	nonZero := subtle.ConstantTimeByteEq(set, 0) ^ 1
	return int(borrow)&nonZero == 1
}

// maxKeyDraws bounds the rejection sampling of GenerateKey. A uniform 32-byte
// value is out of range with probability about 2^-128, so reaching the bound
// means the source is broken.
const maxKeyDraws = 8

// GenerateKey draws a key pair from r: 32 bytes read as a big-endian scalar,
// drawn again while out of [1, n-1]. With a scripted reader the private key is
// exactly the bytes read, which is how tests script ratchet and ephemeral keys.
func GenerateKey(r io.Reader) (KeyPair, error) {
	if r == nil {
		return KeyPair{}, fmt.Errorf("%w: no random source", ErrRandomness)
	}
	var buf [PrivateKeySize]byte
	for range maxKeyDraws {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return KeyPair{}, fmt.Errorf("%w: %v", ErrRandomness, err)
		}
		if sk, err := ParsePrivateKey(buf[:]); err == nil {
			clear(buf[:])
			return sk.KeyPair()
		}
	}
	return KeyPair{}, fmt.Errorf("%w: %d draws out of range", ErrRandomness, maxKeyDraws)
}

// KeyPair computes the public key of sk.
func (sk PrivateKey) KeyPair() (KeyPair, error) {
	pub, err := sk.Public()
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Private: sk, Public: pub}, nil
}

// Public computes the compressed public key of sk (remembered: see
// publicKeys).
func (sk PrivateKey) Public() (PublicKey, error) {
	d := secretDigest(&sk)
	if pk, ok := publicKeys.get(d); ok {
		return pk, nil
	}
	var pk PublicKey
	e, err := sk.ecdsa()
	if err != nil {
		return pk, err
	}
	copy(pk[:], gethcrypto.CompressPubkey(&e.PublicKey))
	publicKeys.add(d, pk)
	return pk, nil
}

func (sk PrivateKey) ecdsa() (*ecdsa.PrivateKey, error) {
	e, err := gethcrypto.ToECDSA(sk[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return e, nil
}

// ECDH returns the x-coordinate of sk·pub, 32 bytes big-endian, left-padded:
// Status's DH (ecies GenerateShared with 16+16, status-compat.md §2). It is
// not hashed. A failing or all-zero result is rejected.
func ECDH(sk PrivateKey, pub PublicKey) ([SharedSize]byte, error) {
	var out [SharedSize]byte
	if !scalarInRange(sk[:]) {
		return out, fmt.Errorf("%w: private key out of range", ErrInvalidKey)
	}
	p, err := gethcrypto.DecompressPubkey(pub[:])
	if err != nil {
		return out, fmt.Errorf("%w: public key not on the curve", ErrInvalidKey)
	}
	// With cgo this is libsecp256k1's constant-time ecmult_const.
	x, _ := gethcrypto.S256().ScalarMult(p.X, p.Y, sk[:])
	if x == nil || x.BitLen() > 256 {
		return out, ErrInvalidSharedSecret
	}
	x.FillBytes(out[:])
	var zero [SharedSize]byte
	if subtle.ConstantTimeCompare(out[:], zero[:]) == 1 {
		return out, ErrInvalidSharedSecret
	}
	return out, nil
}

// Keccak256 is legacy Keccak-256 (Ethereum's), not NIST SHA3-256.
func Keccak256(data ...[]byte) [32]byte {
	var out [32]byte
	copy(out[:], gethcrypto.Keccak256(data...))
	return out
}

// Sign makes a 65-byte R‖S‖V recoverable signature of a 32-byte digest, V in
// {0,1}, deterministic (RFC 6979) and low-S, as go-ethereum's crypto.Sign.
func Sign(sk PrivateKey, digest [32]byte) ([SignatureSize]byte, error) {
	var sig [SignatureSize]byte
	if !scalarInRange(sk[:]) {
		return sig, fmt.Errorf("%w: private key out of range", ErrInvalidKey)
	}
	// go-ethereum's Sign reads only D, so the public key (a scalar
	// multiplication) is not computed.
	e := &ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: gethcrypto.S256()}, D: new(big.Int).SetBytes(sk[:])}
	s, err := gethcrypto.Sign(digest[:], e)
	if err != nil {
		return sig, fmt.Errorf("keys: sign: %w", err)
	}
	copy(sig[:], s)
	return sig, nil
}

// Verify checks that sig is a signature of digest by pub, by recovering the
// signer's key (status-compat.md §4.4). It accepts V < 4 as Status does, and
// rejects V = 27/28, r or s out of range, and high-S signatures (Status only
// produces low-S, so rejecting the malleated twin costs no compatibility).
func Verify(pub PublicKey, digest [32]byte, sig []byte) error {
	recovered, err := Recover(digest, sig)
	if err != nil {
		return err
	}
	// Status compares addresses (Keccak of X‖Y); comparing the keys themselves
	// is equivalent and needs no hash.
	if !recovered.Equal(pub) {
		return fmt.Errorf("%w: signed by another key", ErrBadSignature)
	}
	return nil
}

// Uncompressed returns the 65-byte SEC1 encoding 0x04‖X‖Y.
func (pk PublicKey) Uncompressed() ([65]byte, error) {
	var out [65]byte
	p, err := gethcrypto.DecompressPubkey(pk[:])
	if err != nil {
		return out, fmt.Errorf("%w: public key not on the curve", ErrInvalidKey)
	}
	copy(out[:], gethcrypto.FromECDSAPub(p))
	return out, nil
}

// Equal reports whether two public keys are the same, in constant time.
func (pk PublicKey) Equal(o PublicKey) bool {
	return subtle.ConstantTimeCompare(pk[:], o[:]) == 1
}

// IsZero reports whether pk is the zero value (no key).
func (pk PublicKey) IsZero() bool { return pk == PublicKey{} }

// String is the hex encoding, for logs and diagnostics.
func (pk PublicKey) String() string { return hex.EncodeToString(pk[:]) }

// IsZero reports whether sk is the zero value (no key).
func (sk PrivateKey) IsZero() bool {
	var zero PrivateKey
	return subtle.ConstantTimeCompare(sk[:], zero[:]) == 1
}

// String never prints the secret.
func (sk PrivateKey) String() string { return "keys.PrivateKey(redacted)" }

// GoString never prints the secret.
func (sk PrivateKey) GoString() string { return sk.String() }

// Format never prints the secret, whatever the verb (%d and %b bypass
// String).
func (sk PrivateKey) Format(f fmt.State, _ rune) { io.WriteString(f, sk.String()) }

// Recover returns the key that made sig over digest, with the same checks as
// Verify. It is how a receiver learns a sender's identity from a signed
// envelope (status-compat.md §1: Status takes it from the Waku signature).
func Recover(digest [32]byte, sig []byte) (PublicKey, error) {
	var pk PublicKey
	if len(sig) != SignatureSize {
		return pk, fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadSignature, len(sig), SignatureSize)
	}
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:64])
	if sig[64] >= 4 || r.Sign() == 0 || r.Cmp(curveN) >= 0 || s.Sign() == 0 || s.Cmp(halfCurveN) > 0 {
		return pk, fmt.Errorf("%w: signature values out of range", ErrBadSignature)
	}
	p, err := gethcrypto.SigToPub(digest[:], sig)
	if err != nil {
		return pk, fmt.Errorf("%w: recovery failed", ErrBadSignature)
	}
	copy(pk[:], gethcrypto.CompressPubkey(p))
	return pk, nil
}

// Bytes returns a copy of the compressed encoding.
func (pk PublicKey) Bytes() []byte { return append([]byte(nil), pk[:]...) }
