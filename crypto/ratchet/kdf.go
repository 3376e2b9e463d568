package ratchet

import (
	"crypto/sha256"
	"fmt"
	"io"
)

// Domain-separation labels of Status's EthereumCrypto (status-compat.md §6.2,
// §17.3). They are ASCII strings used as HKDF info.
const (
	rootInfo    = "rsZUpEuXUqqwXBvSy3EcievAh4cMj6QL"
	messageInfo = "pcwSByyx2CRdryCffXJwy7xgVZWtW5Sh"
)

// KDF_CK inputs: one byte each, 15 and 16, not Signal's 0x01/0x02
// (status-compat.md §6.2).
var (
	chainStep   = []byte{0x0f}
	messageStep = []byte{0x10}
)

// RootKey, ChainKey and MessageKey are the 32-byte secrets of the ratchet.
type (
	RootKey    [32]byte
	ChainKey   [32]byte
	MessageKey [32]byte
	HeaderKey  [32]byte
)

// The secrets never print: %v of a State or a Result shows no key.
func (RootKey) String() string    { return "ratchet.RootKey(redacted)" }
func (ChainKey) String() string   { return "ratchet.ChainKey(redacted)" }
func (MessageKey) String() string { return "ratchet.MessageKey(redacted)" }
func (HeaderKey) String() string  { return "ratchet.HeaderKey(redacted)" }

func (k RootKey) Format(f fmt.State, _ rune)    { io.WriteString(f, k.String()) }
func (k ChainKey) Format(f fmt.State, _ rune)   { io.WriteString(f, k.String()) }
func (k MessageKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }
func (k HeaderKey) Format(f fmt.State, _ rune)  { io.WriteString(f, k.String()) }

// KDFRK is Status's root KDF (status-compat.md §6.2): HKDF-SHA256 with
// IKM = dh, salt = rk, info = rootInfo, 96 bytes out = new root ‖ chain key ‖
// header key. The header key is unused by Status (no header encryption).
func KDFRK(rk RootKey, dh [32]byte) (RootKey, ChainKey, HeaderKey) {
	var out [96]byte
	hkdfSHA256(out[:], dh[:], rk[:], rootInfo)
	var root RootKey
	var ck ChainKey
	var hk HeaderKey
	copy(root[:], out[0:32])
	copy(ck[:], out[32:64])
	copy(hk[:], out[64:96])
	clear(out[:])
	return root, ck, hk
}

// KDFCK is Status's chain KDF (status-compat.md §6.2):
// next = HMAC-SHA256(ck, 0x0F), mk = HMAC-SHA256(ck, 0x10).
func KDFCK(ck ChainKey) (ChainKey, MessageKey) {
	return ChainKey(hmacShort(ck[:], chainStep)), MessageKey(hmacShort(ck[:], messageStep))
}

// messageKeys is the expansion of a message key (status-compat.md §6.2):
// HKDF-SHA256 with IKM = mk, 32 zero bytes of salt, info = messageInfo,
// 80 bytes = encryption key ‖ authentication key ‖ IV.
type messageKeys struct {
	enc  [32]byte
	auth [32]byte
	iv   [16]byte
}

func expand(mk MessageKey) messageKeys {
	var salt [32]byte
	var out [80]byte
	hkdfSHA256(out[:], mk[:], salt[:], messageInfo)
	var k messageKeys
	copy(k.enc[:], out[0:32])
	copy(k.auth[:], out[32:64])
	copy(k.iv[:], out[64:80])
	clear(out[:])
	return k
}

func (k *messageKeys) wipe() {
	clear(k.enc[:])
	clear(k.auth[:])
	clear(k.iv[:])
}

// The ratchet's KDFs run HMAC-SHA256 on short inputs under 32-byte keys,
// several times per message. hmacShort and hkdfSHA256 compute them on the
// stack (RFC 2104, RFC 5869): crypto/hmac and x/crypto/hkdf allocate two
// hash states and their marshalled pads per use, about a sixth of what a
// ping-pong message allocated. TestShortKDFsMatchStandard checks them
// against those packages; the known-answer vectors check the KDFs.
const (
	hmacBlock = 64
	maxShort  = sha256.Size + 64 + 1 // an HKDF round: T(i-1) ‖ info ‖ i
)

// hmacShort is HMAC-SHA256 under key (at most one block) of the
// concatenation of msg, at most maxShort bytes.
func hmacShort(key []byte, msg ...[]byte) [sha256.Size]byte {
	if len(key) > hmacBlock {
		panic("ratchet: hmac key longer than a block")
	}
	var buf [hmacBlock + maxShort]byte
	for i := range hmacBlock {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		buf[i] = k ^ 0x36
	}
	n := hmacBlock
	for _, m := range msg {
		if n+len(m) > len(buf) {
			panic("ratchet: hmac message too long")
		}
		n += copy(buf[n:], m)
	}
	inner := sha256.Sum256(buf[:n])
	for i := range hmacBlock {
		var k byte
		if i < len(key) {
			k = key[i]
		}
		buf[i] = k ^ 0x5c
	}
	n = hmacBlock + copy(buf[hmacBlock:], inner[:])
	out := sha256.Sum256(buf[:n])
	clear(buf[:])
	clear(inner[:])
	return out
}

// hkdfSHA256 fills out (at most 255 blocks) with HKDF-SHA256 of ikm, salt
// (at most one block) and info (at most 64 bytes).
func hkdfSHA256(out, ikm, salt []byte, info string) {
	prk := hmacShort(salt, ikm)
	var t [sha256.Size]byte
	var prev []byte
	var infoBuf [64]byte
	if len(info) > len(infoBuf) || len(out) > 255*sha256.Size {
		panic("ratchet: hkdf input out of range")
	}
	in := infoBuf[:copy(infoBuf[:], info)]
	for i, n := byte(1), 0; n < len(out); i++ {
		t = hmacShort(prk[:], prev, in, []byte{i})
		prev = t[:]
		n += copy(out[n:], t[:])
	}
	clear(prk[:])
	clear(t[:])
}
