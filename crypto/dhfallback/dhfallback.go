// Package dhfallback is Status's DH path, used when no bundle of the
// recipient is known (5/SECURE-TRANSPORT "Initial key exchange flow";
// status-compat.md §7): an ephemeral ECDH with the recipient's identity key,
// whose raw x-coordinate is the AES-256-GCM key, with a random 12-byte nonce
// appended to the sealed payload. It has no forward secrecy.
package dhfallback

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"

	"github.com/ratchetd/ratchetd/crypto/keys"
)

// NonceSize and Overhead of a sealed payload: ct ‖ tag(16) ‖ nonce(12).
const (
	NonceSize = 12
	TagSize   = 16
	Overhead  = TagSize + NonceSize
)

// maxNonceDraws bounds the redraws of an all-zero nonce.
const maxNonceDraws = 8

var (
	// ErrMalformedPayload: a payload too short to hold a tag and a nonce.
	ErrMalformedPayload = errors.New("dhfallback: malformed payload")
	// ErrDecrypt: the GCM tag did not verify.
	ErrDecrypt = errors.New("dhfallback: message authentication failed")
)

// Seal encrypts pt to recipient with a fresh ephemeral key and nonce drawn
// from rand. It returns the ephemeral public key (the DHHeader key) and the
// payload.
func Seal(rand io.Reader, recipient keys.PublicKey, pt []byte) (keys.PublicKey, []byte, error) {
	ek, err := keys.GenerateKey(rand)
	if err != nil {
		return keys.PublicKey{}, nil, err
	}
	defer clear(ek.Private[:])
	key, err := keys.ECDH(ek.Private, recipient)
	if err != nil {
		return keys.PublicKey{}, nil, err
	}
	defer clear(key[:])
	var nonce [NonceSize]byte
	// status-go's EncryptSymmetric rejects an all-zero random nonce; a
	// source that keeps giving zeros is broken.
	for i := 0; ; i++ {
		if _, err := io.ReadFull(rand, nonce[:]); err != nil {
			return keys.PublicKey{}, nil, fmt.Errorf("%w: %v", keys.ErrRandomness, err)
		}
		if nonce != [NonceSize]byte{} {
			break
		}
		if i == maxNonceDraws {
			return keys.PublicKey{}, nil, fmt.Errorf("%w: all-zero nonces", keys.ErrRandomness)
		}
	}
	payload, err := SealWithKey(key, nonce, pt)
	return ek.Public, payload, err
}

// SealWithKey is the symmetric half of Seal: AES-256-GCM(key, nonce, pt, no
// AD) ‖ nonce.
func SealWithKey(key [keys.SharedSize]byte, nonce [NonceSize]byte, pt []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(pt)+Overhead)
	out = aead.Seal(out, nonce[:], pt, nil)
	return append(out, nonce[:]...), nil
}

// Open decrypts a DH-fallback payload addressed to identity, given the
// sender's ephemeral key from the DHHeader.
func Open(identity keys.PrivateKey, ephemeral keys.PublicKey, payload []byte) ([]byte, error) {
	if len(payload) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformedPayload, len(payload))
	}
	key, err := keys.ECDH(identity, ephemeral)
	if err != nil {
		return nil, err
	}
	defer clear(key[:])
	return OpenWithKey(key, payload)
}

// OpenWithKey is the symmetric half of Open.
func OpenWithKey(key [keys.SharedSize]byte, payload []byte) ([]byte, error) {
	if len(payload) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformedPayload, len(payload))
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	split := len(payload) - NonceSize
	pt, err := aead.Open(nil, payload[split:], payload[:split], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

func newGCM(key [keys.SharedSize]byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("dhfallback: %w", err)
	}
	return cipher.NewGCM(block)
}
