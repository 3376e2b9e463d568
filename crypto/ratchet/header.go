package ratchet

import (
	"encoding/binary"
	"fmt"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
)

// ADSize is the length of the associated data: LE32 n ‖ LE32 pn ‖ 33-byte key.
const ADSize = 4 + 4 + keys.PublicKeySize

// Header is the Double Ratchet header of one message.
type Header struct {
	DH keys.PublicKey // sender's current ratchet public key
	N  uint32         // message number in the sending chain
	PN uint32         // length of the sender's previous sending chain
}

// AD is the associated data Status authenticates: the header encoding and
// nothing else, since status-go passes a nil AD (status-compat.md §6.2).
func (h Header) AD() [ADSize]byte {
	var ad [ADSize]byte
	binary.LittleEndian.PutUint32(ad[0:4], h.N)
	binary.LittleEndian.PutUint32(ad[4:8], h.PN)
	copy(ad[8:], h.DH[:])
	return ad
}

// Proto returns the wire header with the session's bundle id
// (status-compat.md §5.4).
func (h Header) Proto(bundleID keys.PublicKey) *messages.DRHeader {
	return &messages.DRHeader{Key: h.DH[:], N: h.N, Pn: h.PN, Id: bundleID[:]}
}

// ParseHeader validates a received DRHeader: the ratchet key and the bundle
// id must both be valid compressed keys.
func ParseHeader(p *messages.DRHeader) (Header, keys.PublicKey, error) {
	if p == nil {
		return Header{}, keys.PublicKey{}, fmt.Errorf("%w: no DR header", ErrMalformedMessage)
	}
	dh, err := keys.ParsePublicKey(p.GetKey())
	if err != nil {
		return Header{}, keys.PublicKey{}, fmt.Errorf("%w: ratchet key: %w", ErrMalformedMessage, err)
	}
	id, err := keys.ParsePublicKey(p.GetId())
	if err != nil {
		return Header{}, keys.PublicKey{}, fmt.Errorf("%w: bundle id: %w", ErrMalformedMessage, err)
	}
	return Header{DH: dh, N: p.GetN(), PN: p.GetPn()}, id, nil
}

// SessionID is Status's local session id: bundle id (33 B) ‖ the peer's
// installation id (status-compat.md §5.4, KAT-8). It is never on the wire.
func SessionID(bundleID keys.PublicKey, peerInstallationID string) []byte {
	id := make([]byte, 0, keys.PublicKeySize+len(peerInstallationID))
	id = append(id, bundleID[:]...)
	return append(id, peerInstallationID...)
}
