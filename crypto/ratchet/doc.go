// Package ratchet is the Double Ratchet exactly as Status runs it
// (5/SECURE-TRANSPORT "Double Ratchet"; status-compat.md §6): secp256k1
// ratchet keys, Status's KDF constants, AES-256-CTR + HMAC-SHA256 with the
// 41-byte header as associated data, and the initial states of
// status-im/doubleratchet v3.0.0.
//
// Decrypt is a pure function: it reads a State and a SkippedKeys store and
// returns a Result holding the next state and the changes to the store; it
// never modifies what it was given. The caller commits a Result only after it
// succeeded (Session.Apply does both halves), so a failed decrypt leaves the
// state byte-identical. Unlike Status, a message key is consumed when used: a
// second delivery of a message reports ErrDuplicateMessage, never a second
// plaintext.
package ratchet

import "errors"

// Errors. Each is wrapped with context; match with errors.Is.
var (
	// ErrInvalidMAC: the message's tag did not verify (tampered, forged, or
	// encrypted for another session).
	ErrInvalidMAC = errors.New("ratchet: invalid message authentication code")
	// ErrDuplicateMessage: the message key was already used (or dropped by
	// the retention limits): the message was delivered before.
	ErrDuplicateMessage = errors.New("ratchet: duplicate message")
	// ErrTooManySkipped: the message is further ahead in its chain (n) or
	// closes the previous chain further ahead (pn) than MaxSkip allows.
	ErrTooManySkipped = errors.New("ratchet: too many skipped messages")
	// ErrMalformedMessage: a header or ciphertext that cannot be valid.
	ErrMalformedMessage = errors.New("ratchet: malformed message")
	// ErrNoSession: no ratchet session matches the message's bundle id.
	ErrNoSession = errors.New("ratchet: no session")
	// ErrNoSendingChain: the responder has not received a message yet, so it
	// has no sending chain of its own. The X3DH specification (§4.3) forbids
	// sending before the first DH ratchet step.
	ErrNoSendingChain = errors.New("ratchet: no sending chain before the first received message")
	// ErrCounterExhausted: the sending chain reached 2^32-1 messages.
	ErrCounterExhausted = errors.New("ratchet: message counter exhausted")
	// ErrInvalidState: a snapshot that violates the state's invariants.
	ErrInvalidState = errors.New("ratchet: invalid state")
)
