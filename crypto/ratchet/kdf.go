package ratchet

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"

	"golang.org/x/crypto/hkdf"
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
	r := hkdf.New(sha256.New, dh[:], rk[:], []byte(rootInfo))
	if _, err := io.ReadFull(r, out[:]); err != nil {
		panic("ratchet: hkdf: " + err.Error()) // 96 <= 255*32: cannot happen
	}
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
	var next ChainKey
	var mk MessageKey
	m := hmac.New(sha256.New, ck[:])
	m.Write(chainStep)
	m.Sum(next[:0])
	m.Reset()
	m.Write(messageStep)
	m.Sum(mk[:0])
	return next, mk
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
	r := hkdf.New(sha256.New, mk[:], salt[:], []byte(messageInfo))
	if _, err := io.ReadFull(r, out[:]); err != nil {
		panic("ratchet: hkdf: " + err.Error()) // 80 <= 255*32: cannot happen
	}
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
