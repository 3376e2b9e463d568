// Package peers runs the same secure-transport workloads through ratchetd's
// crypto and through the peer implementations it is compared with, in one
// process, so that their throughputs can be put side by side.
//
// One message is always the full path of a 200-byte payload: encrypt on one
// side, encode to the implementation's protobuf wire format, decode on the
// other side, decrypt and check the plaintext. Both sides run on the calling
// goroutine; nothing is persisted and no actor or transport is involved.
//
// Workloads (see README.md):
//   - burst: messages one way in a row on an established session (the
//     symmetric-key ratchet only);
//   - pingpong: strict alternation, so every message starts a new chain and
//     every decrypt takes a DH ratchet step;
//   - x3dh: a new session per message: the initiator processes the
//     responder's prekey bundle (signature check, X3DH, first chain) and
//     encrypts; the responder runs its side of X3DH and decrypts.
package peers

import (
	"bytes"
	"fmt"
)

// PayloadSize is the plaintext size of every message.
const PayloadSize = 200

// Payload returns the fixed 200-byte plaintext every implementation sends.
func Payload() []byte {
	p := make([]byte, PayloadSize)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	return p
}

// Pair is two established sessions of one implementation, A (index 0, the
// initiator) and B (index 1). Both sides can send: the set-up exchanged one
// message each way, so that the initiator's prekey/X3DH header is
// acknowledged and later messages are plain ratchet messages.
type Pair interface {
	// Send carries one message from side `from` to the other side: encrypt,
	// wire encoding, wire decoding, decrypt. It returns the decrypted
	// plaintext.
	Send(from int, payload []byte) ([]byte, error)
}

// Handshaker creates a new session per call: bundle processing and X3DH on
// both sides plus the first message (encrypt, wire, decrypt). Long-term keys
// (identities, the responder's signed prekey and its signature) are made
// once, outside the measurement.
type Handshaker interface {
	Handshake(payload []byte) ([]byte, error)
}

// Impl is one implementation under comparison.
type Impl struct {
	// Name is the short name used in tables and on the command line.
	Name string
	// Summary says what the implementation does per message.
	Summary string
	// NewPair establishes a session pair (not measured).
	NewPair func() (Pair, error)
	// NewHandshaker prepares long-term keys for the x3dh workload; nil when
	// the implementation has no such path, NoX3DH saying why.
	NewHandshaker func() (Handshaker, error)
	NoX3DH        string
	// SteadyState is how many messages each receiving side decrypts during
	// warm-up so that a store that fills up is full when measuring starts;
	// 0 when the implementation keeps nothing per message. (In pingpong the
	// Status in-memory store keeps growing past it: see README.md.)
	SteadyState int
}

// Impls returns every implementation, ratchetd first.
func Impls() []Impl {
	return []Impl{
		ratchetdImpl(),
		libsignalImpl(),
		statusImpl(statusX25519),
		statusImpl(statusK1),
		statusImpl(statusK1Del),
		statusImpl(statusK1LeanDel),
	}
}

// Lookup returns the implementations with the given names, in that order.
func Lookup(names []string) ([]Impl, error) {
	all := Impls()
	var out []Impl
	for _, n := range names {
		found := false
		for _, im := range all {
			if im.Name == n {
				out = append(out, im)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("peers: unknown implementation %q", n)
		}
	}
	return out, nil
}

func checkPlaintext(got, want []byte) error {
	if !bytes.Equal(got, want) {
		return fmt.Errorf("peers: decrypted plaintext differs (%d bytes, want %d)", len(got), len(want))
	}
	return nil
}

// other is the index of the side that receives what side `from` sends.
func other(from int) int { return 1 - from }
