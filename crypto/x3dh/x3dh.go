// Package x3dh is the X3DH key agreement as Status performs it
// (5/SECURE-TRANSPORT "X3DH"; status-compat.md §5): three secp256k1 ECDHs
// and SK = Keccak256(dh1 ‖ dh2 ‖ dh3). There are no one-time prekeys, no
// HKDF with an 0xFF prefix and no associated data (a documented deviation from
// the Signal X3DH specification, §2.2, kept for compatibility).
package x3dh

import (
	"fmt"
	"io"

	"github.com/ratchetd/ratchetd/crypto/keys"
)

// SharedKey is the X3DH output SK, the Double Ratchet's first root key.
type SharedKey [32]byte

// Initiation is what the active side keeps from an X3DH: SK and the
// ephemeral public key it must repeat in the X3DH header (status-compat.md
// §5.3). The ephemeral private key is not kept.
type Initiation struct {
	SK        SharedKey
	Ephemeral keys.PublicKey
}

// Initiate runs the active side with a fresh ephemeral key drawn from rand
// against the responder's identity key and signed prekey.
func Initiate(rand io.Reader, identity keys.PrivateKey, peerIdentity, peerSignedPreKey keys.PublicKey) (Initiation, error) {
	ek, err := keys.GenerateKey(rand)
	if err != nil {
		return Initiation{}, err
	}
	sk, err := Active(identity, ek.Private, peerIdentity, peerSignedPreKey)
	clear(ek.Private[:])
	if err != nil {
		return Initiation{}, err
	}
	return Initiation{SK: sk, Ephemeral: ek.Public}, nil
}

// Active computes SK on the initiator's side (status-compat.md §5.1):
// dh1 = DH(IK_A, SPK_B), dh2 = DH(EK_A, IK_B), dh3 = DH(EK_A, SPK_B).
func Active(identity, ephemeral keys.PrivateKey, peerIdentity, peerSignedPreKey keys.PublicKey) (SharedKey, error) {
	return derive(
		dh{identity, peerSignedPreKey},
		dh{ephemeral, peerIdentity},
		dh{ephemeral, peerSignedPreKey},
	)
}

// Passive computes SK on the responder's side (status-compat.md §5.1):
// dh1 = DH(SPK_B, IK_A), dh2 = DH(IK_B, EK_A), dh3 = DH(SPK_B, EK_A).
func Passive(identity, signedPreKey keys.PrivateKey, peerIdentity, peerEphemeral keys.PublicKey) (SharedKey, error) {
	return derive(
		dh{signedPreKey, peerIdentity},
		dh{identity, peerEphemeral},
		dh{signedPreKey, peerEphemeral},
	)
}

type dh struct {
	priv keys.PrivateKey
	pub  keys.PublicKey
}

func derive(steps ...dh) (SharedKey, error) {
	var material [3 * keys.SharedSize]byte
	defer clear(material[:])
	for i, s := range steps {
		out, err := keys.ECDH(s.priv, s.pub)
		if err != nil {
			return SharedKey{}, fmt.Errorf("x3dh: dh%d: %w", i+1, err)
		}
		copy(material[i*keys.SharedSize:], out[:])
	}
	return SharedKey(keys.Keccak256(material[:])), nil
}
