package ratchet

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
)

// Sizes of a sealed message: iv(16) ‖ ct ‖ tag(32) (status-compat.md §6.2).
const (
	ivSize  = aes.BlockSize
	tagSize = sha256.Size
	// Overhead is what Seal adds to a plaintext; a ciphertext shorter than
	// Overhead is malformed (status-go panics on < 32 bytes; we reject < 48).
	Overhead = ivSize + tagSize
)

// Seal is Status's ENCRYPT (status-compat.md §6.2): AES-256-CTR with the IV
// derived from mk as the initial 128-bit big-endian counter block, then
// HMAC-SHA256(auth key, ad ‖ iv ‖ ct). Output iv ‖ ct ‖ tag.
func Seal(mk MessageKey, plaintext, ad []byte) []byte {
	k := expand(mk)
	defer k.wipe()
	out := make([]byte, ivSize+len(plaintext), ivSize+len(plaintext)+tagSize)
	copy(out, k.iv[:])
	block, err := aes.NewCipher(k.enc[:])
	if err != nil {
		panic("ratchet: aes: " + err.Error()) // 32-byte key: cannot happen
	}
	cipher.NewCTR(block, k.iv[:]).XORKeyStream(out[ivSize:], plaintext)
	return appendTag(out, &k, ad, out)
}

// Open is Status's DECRYPT with the length check status-go lacks: it verifies
// the tag in constant time before decrypting anything.
func Open(mk MessageKey, ciphertext, ad []byte) ([]byte, error) {
	if len(ciphertext) < Overhead {
		return nil, fmt.Errorf("%w: ciphertext is %d bytes, need at least %d", ErrMalformedMessage, len(ciphertext), Overhead)
	}
	k := expand(mk)
	defer k.wipe()
	body := ciphertext[:len(ciphertext)-tagSize]
	var tag [tagSize]byte
	if !hmac.Equal(appendTag(tag[:0], &k, ad, body), ciphertext[len(body):]) {
		return nil, ErrInvalidMAC
	}
	block, err := aes.NewCipher(k.enc[:])
	if err != nil {
		panic("ratchet: aes: " + err.Error())
	}
	// Status sends the IV it derived, and the MAC covers it; decrypt with the
	// transmitted IV as status-go does.
	pt := make([]byte, len(body)-ivSize)
	cipher.NewCTR(block, body[:ivSize]).XORKeyStream(pt, body[ivSize:])
	return pt, nil
}

func appendTag(dst []byte, k *messageKeys, ad, body []byte) []byte {
	m := hmac.New(sha256.New, k.auth[:])
	m.Write(ad)
	m.Write(body)
	return m.Sum(dst)
}
