package actors

import (
	"errors"

	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
)

// codeOf maps an error to the code carried between actors.
func codeOf(err error) messages.ErrorCode {
	switch {
	case err == nil:
		return messages.ErrorCode_OK
	case errors.Is(err, ratchet.ErrDuplicateMessage):
		return messages.ErrorCode_DUPLICATE
	case errors.Is(err, ratchet.ErrInvalidMAC):
		return messages.ErrorCode_INVALID_MAC
	case errors.Is(err, ratchet.ErrTooManySkipped):
		return messages.ErrorCode_TOO_MANY_SKIPPED
	case errors.Is(err, ratchet.ErrMalformedMessage):
		return messages.ErrorCode_MALFORMED
	case errors.Is(err, ratchet.ErrNoSession):
		return messages.ErrorCode_NO_SESSION
	case errors.Is(err, ratchet.ErrNoSendingChain):
		return messages.ErrorCode_NO_SENDING_CHAIN
	case errors.Is(err, persistence.ErrClosed), errors.Is(err, errStore):
		return messages.ErrorCode_STORE
	case errors.Is(err, ErrClosed):
		return messages.ErrorCode_CLOSED
	case errors.Is(err, ErrTimeout):
		return messages.ErrorCode_TIMEOUT
	}
	return messages.ErrorCode_INTERNAL
}

// ErrorOf maps a code back to the crypto sentinel it came from.
func ErrorOf(code messages.ErrorCode) error {
	switch code {
	case messages.ErrorCode_OK:
		return nil
	case messages.ErrorCode_DUPLICATE:
		return ratchet.ErrDuplicateMessage
	case messages.ErrorCode_INVALID_MAC:
		return ratchet.ErrInvalidMAC
	case messages.ErrorCode_TOO_MANY_SKIPPED:
		return ratchet.ErrTooManySkipped
	case messages.ErrorCode_MALFORMED:
		return ratchet.ErrMalformedMessage
	case messages.ErrorCode_NO_SESSION:
		return ratchet.ErrNoSession
	case messages.ErrorCode_NO_SENDING_CHAIN:
		return ratchet.ErrNoSendingChain
	case messages.ErrorCode_TIMEOUT:
		return ErrTimeout
	case messages.ErrorCode_STORE:
		return errStore
	case messages.ErrorCode_CLOSED:
		return ErrClosed
	}
	return ErrInternal
}

var (
	// ErrTimeout: an actor did not answer within Config.RequestTimeout.
	ErrTimeout = errors.New("actors: request timed out")
	// ErrInternal: an actor failed (it was restarted from its last snapshot).
	ErrInternal = errors.New("actors: internal failure")
	errStore    = errors.New("actors: store write failed")
)
