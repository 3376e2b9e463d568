package ratchet

import (
	"fmt"
	"io"
	"math"

	"github.com/ratchetd/ratchetd/crypto/keys"
)

// Encrypt is RatchetEncrypt (status-compat.md §6.4): it steps the sending
// chain and seals plaintext with the header as associated data. It returns
// the next state; st is not modified. The caller must make the next state,
// or one reserved ahead of it on the same chain (Reserve), durable before
// the ciphertext leaves (architecture.md, durability rule 1).
func Encrypt(st *State, plaintext []byte) (State, Header, []byte, error) {
	if !st.CanSend() {
		return State{}, Header{}, nil, ErrNoSendingChain
	}
	if st.Ns == math.MaxUint32 {
		return State{}, Header{}, nil, ErrCounterExhausted
	}
	next := *st
	h := Header{DH: st.DHs.Public, N: st.Ns, PN: st.PN}
	var mk MessageKey
	next.Send, mk = KDFCK(st.Send)
	next.Ns++
	ad := h.AD()
	ct := Seal(mk, plaintext, ad[:])
	clear(mk[:])
	return next, h, ct, nil
}

// Result is the outcome of a successful Decrypt: the next state, the
// plaintext and the changes to the skipped-key store. Nothing of it is
// applied until the caller commits it.
type Result struct {
	Next      State
	Plaintext []byte
	// Skipped are the keys derived ahead of this message, to be stored.
	Skipped []SkippedKey
	// Used is set when the message was decrypted with a stored key, which
	// must now be deleted (a used key is consumed).
	Used   KeyID
	UsedOK bool
}

// Decrypt is RatchetDecrypt (status-compat.md §6.5) as a pure function. It
// returns the next state and store changes, or an error; st and skipped are
// never modified. rand is read only when the message starts a new peer chain
// and has authenticated: a new ratchet key pair is drawn for our next sending
// chain.
//
// Order of checks, each before any expensive or state-changing work:
//  1. the ciphertext must be long enough to hold an IV and a tag;
//  2. a stored skipped key for (key, n) decrypts the message and is consumed;
//  3. on the current receiving chain, n below Nr is a duplicate and a gap
//     above MaxSkip is refused;
//  4. on a remembered closed chain, the message is a duplicate (its key was
//     used or dropped);
//  5. otherwise the key is new: pn closes the current chain (same gap rule),
//     a DH step derives the new receiving chain, and n is checked on it.
func Decrypt(st *State, skipped *SkippedKeys, h Header, ciphertext []byte, lim Limits, rand io.Reader) (*Result, error) {
	lim = lim.withDefaults()
	if len(ciphertext) < Overhead {
		return nil, fmt.Errorf("%w: ciphertext is %d bytes, need at least %d", ErrMalformedMessage, len(ciphertext), Overhead)
	}
	ad := h.AD()
	id := KeyID{RatchetKey: h.DH, N: h.N}
	if k, ok := skipped.Lookup(id); ok {
		pt, err := Open(k.Key, ciphertext, ad[:])
		if err != nil {
			return nil, err
		}
		return &Result{Next: *st, Plaintext: pt, Used: id, UsedOK: true}, nil
	}
	if h.N == math.MaxUint32 {
		return nil, fmt.Errorf("%w: message number %d", ErrMalformedMessage, h.N)
	}

	next := *st
	var newKeys []SkippedKey
	stepped := false
	if !st.DHr.IsZero() && h.DH.Equal(st.DHr) {
		if h.N < st.Nr {
			return nil, fmt.Errorf("%w: n=%d on the current chain, next expected %d", ErrDuplicateMessage, h.N, st.Nr)
		}
	} else {
		for _, c := range st.Previous {
			if h.DH.Equal(c.Key) {
				if h.N < c.Length {
					return nil, fmt.Errorf("%w: n=%d on a closed chain", ErrDuplicateMessage, h.N)
				}
				return nil, fmt.Errorf("%w: n=%d beyond the end (%d) of a closed chain", ErrMalformedMessage, h.N, c.Length)
			}
		}
		// A new peer ratchet key: close the current receiving chain up to pn.
		if h.PN < st.Nr {
			return nil, fmt.Errorf("%w: pn=%d below the %d messages already received on the previous chain", ErrMalformedMessage, h.PN, st.Nr)
		}
		if h.PN-st.Nr > lim.MaxSkip {
			return nil, fmt.Errorf("%w: pn=%d closes a gap of %d, limit %d", ErrTooManySkipped, h.PN, h.PN-st.Nr, lim.MaxSkip)
		}
		if h.N > lim.MaxSkip {
			return nil, fmt.Errorf("%w: n=%d on a new chain, limit %d", ErrTooManySkipped, h.N, lim.MaxSkip)
		}
		if !st.DHr.IsZero() {
			// Before the first receive (responder) there is no peer chain:
			// Status would derive keys under an empty ratchet key that no
			// message can name, so none are derived.
			newKeys = skipChain(&next, st.DHr, h.PN, newKeys)
			next.Previous = appendChainEnd(st.Previous, ChainEnd{Key: st.DHr, Length: h.PN}, lim.MaxPreviousChains)
		}
		dh, err := keys.ECDH(st.DHs.Private, h.DH)
		if err != nil {
			return nil, fmt.Errorf("ratchet: dh step: %w", err)
		}
		next.Root, next.Recv, _ = KDFRK(st.Root, dh)
		next.DHr = h.DH
		next.Nr = 0
		stepped = true
	}
	if h.N-next.Nr > lim.MaxSkip {
		return nil, fmt.Errorf("%w: n=%d is %d ahead of the chain, limit %d", ErrTooManySkipped, h.N, h.N-next.Nr, lim.MaxSkip)
	}
	newKeys = skipChain(&next, h.DH, h.N, newKeys)
	var mk MessageKey
	next.Recv, mk = KDFCK(next.Recv)
	next.Nr++
	next.KeysCount++
	pt, err := Open(mk, ciphertext, ad[:])
	clear(mk[:])
	if err != nil {
		return nil, err
	}
	if stepped {
		// The message authenticated on a new peer chain: finish the DH
		// ratchet with a fresh key pair for our next sending chain. Drawing
		// it only now means a forged header costs no key (status-go draws
		// one and throws it away).
		dhs, err := keys.GenerateKey(rand)
		if err != nil {
			return nil, err
		}
		dh, err := keys.ECDH(dhs.Private, h.DH)
		if err != nil {
			return nil, fmt.Errorf("ratchet: dh step: %w", err)
		}
		next.PN = st.Ns
		next.Ns = 0
		next.DHs = dhs
		next.Root, next.Send, _ = KDFRK(next.Root, dh)
	}
	return &Result{Next: next, Plaintext: pt, Skipped: newKeys}, nil
}

// skipChain derives the message keys of st's receiving chain from st.Nr up
// to (not including) until, numbering them with KeysCount.
func skipChain(st *State, key keys.PublicKey, until uint32, out []SkippedKey) []SkippedKey {
	for st.Nr < until {
		var mk MessageKey
		st.Recv, mk = KDFCK(st.Recv)
		out = append(out, SkippedKey{KeyID: KeyID{RatchetKey: key, N: st.Nr}, Key: mk, Seq: st.KeysCount})
		st.Nr++
		st.KeysCount++
	}
	return out
}

// appendChainEnd returns a new slice (never aliasing prev) with c appended
// and at most max entries.
func appendChainEnd(prev []ChainEnd, c ChainEnd, max int) []ChainEnd {
	if len(prev) >= max {
		prev = prev[len(prev)-max+1:]
	}
	out := make([]ChainEnd, 0, len(prev)+1)
	out = append(out, prev...)
	return append(out, c)
}

// Session is a State with its skipped keys and limits: the in-memory unit
// the engine's PeerSession owns.
type Session struct {
	State   State
	Skipped SkippedKeys
	Limits  Limits
}

// Encrypt encrypts and commits the next state.
func (s *Session) Encrypt(plaintext []byte) (Header, []byte, error) {
	next, h, ct, err := Encrypt(&s.State, plaintext)
	if err != nil {
		return Header{}, nil, err
	}
	s.State = next
	return h, ct, nil
}

// Decrypt decrypts and, only on success, commits the result. It returns the
// result so that a persistent store can mirror the changes, and the keys the
// limits evicted.
func (s *Session) Decrypt(h Header, ciphertext []byte, rand io.Reader) (*Result, []SkippedKey, error) {
	r, err := Decrypt(&s.State, &s.Skipped, h, ciphertext, s.Limits, rand)
	if err != nil {
		return nil, nil, err
	}
	return r, s.Apply(r), nil
}

// Apply commits a successful Decrypt result: the next state, the new
// skipped keys, the consumed key, and eviction under the limits. It returns
// the evicted keys.
func (s *Session) Apply(r *Result) []SkippedKey {
	lim := s.Limits.withDefaults()
	s.State = r.Next
	for _, k := range r.Skipped {
		s.Skipped.add(k)
	}
	if r.UsedOK {
		if k, ok := s.Skipped.index[r.Used]; ok {
			clear(k.Key[:])
			delete(s.Skipped.index, r.Used)
		}
	}
	return s.Skipped.evict(s.State.KeysCount, lim)
}

// MaxReserve bounds how far Reserve steps a sending chain at once: well
// under the smallest MaxSkip a peer may use, so that the keys a restart
// leaves unused are always skipped, never refused.
const MaxReserve = 256

// Reserve returns st with its sending chain stepped to message number upto:
// Send is the chain key that message upto's key comes from and Ns = upto;
// st is not modified. Stored in place of st, it can never derive the keys
// of messages Ns..upto-1 again, so those may be sent while only the
// reserved state is durable (architecture.md, durability rule 1: after a
// crash the chain resumes at upto, and the peer skips the keys left unused,
// status-compat.md §6.5). Before the first received message there is no
// sending chain and st is returned as it is.
func Reserve(st *State, upto uint32) (State, error) {
	next := *st
	if !st.CanSend() || upto == st.Ns {
		return next, nil
	}
	if upto < st.Ns || upto-st.Ns > MaxReserve {
		return State{}, fmt.Errorf("%w: reserve from %d to %d", ErrInvalidState, st.Ns, upto)
	}
	for ; next.Ns < upto; next.Ns++ {
		var mk MessageKey
		next.Send, mk = KDFCK(next.Send)
		clear(mk[:])
	}
	return next, nil
}
