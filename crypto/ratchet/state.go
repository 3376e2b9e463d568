package ratchet

import (
	"fmt"
	"io"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
)

// Limits bound what a peer can make a session compute and store. Every field
// has Status's default (status-compat.md §6.7); a zero field means the
// default.
type Limits struct {
	// MaxSkip is the largest gap in one chain: a message with
	// n − Nr > MaxSkip (or a previous-chain length pn − Nr > MaxSkip) is
	// refused. Status: 1000, per gap (status-compat.md §6.5).
	MaxSkip uint32
	// MaxKeep drops skipped keys older than the last MaxKeep received or
	// skipped messages. Status: 3000.
	MaxKeep uint64
	// MaxMessageKeysPerSession caps the skipped keys a session holds; the
	// oldest go first. Status: 2000.
	MaxMessageKeysPerSession int
	// MaxPreviousChains is how many closed receiving chains are remembered,
	// so that a late copy of a message from one of them is reported as a
	// duplicate instead of being taken for a new ratchet key. Not in Status
	// (local only); libsignal and vodozemac keep 5 receiver chains.
	MaxPreviousChains int
}

// Status's defaults (status-compat.md §6.7).
const (
	DefaultMaxSkip                  = 1000
	DefaultMaxKeep                  = 3000
	DefaultMaxMessageKeysPerSession = 2000
	DefaultMaxPreviousChains        = 5
)

// DefaultLimits returns Status's limits.
func DefaultLimits() Limits {
	return Limits{
		MaxSkip:                  DefaultMaxSkip,
		MaxKeep:                  DefaultMaxKeep,
		MaxMessageKeysPerSession: DefaultMaxMessageKeysPerSession,
		MaxPreviousChains:        DefaultMaxPreviousChains,
	}
}

// WithDefaults returns l with its zero fields set to Status's defaults.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

// withDefaults fills zero fields with Status's defaults.
func (l Limits) withDefaults() Limits {
	if l.MaxSkip == 0 {
		l.MaxSkip = DefaultMaxSkip
	}
	if l.MaxKeep == 0 {
		l.MaxKeep = DefaultMaxKeep
	}
	if l.MaxMessageKeysPerSession <= 0 {
		l.MaxMessageKeysPerSession = DefaultMaxMessageKeysPerSession
	}
	if l.MaxPreviousChains <= 0 {
		l.MaxPreviousChains = DefaultMaxPreviousChains
	}
	return l
}

// ChainEnd is a closed receiving chain: its ratchet key and the number of
// message keys derived on it.
type ChainEnd struct {
	Key    keys.PublicKey
	Length uint32
}

// State is the chain state of one session (status-go's `sessions` row,
// status-compat.md §11), without the skipped keys, which live in SkippedKeys.
// It is a value: copying a State copies everything but the Previous slice,
// which is never modified in place (copy-on-write).
type State struct {
	Root   RootKey
	Send   ChainKey
	Recv   ChainKey
	DHs    keys.KeyPair   // our current ratchet key pair
	DHr    keys.PublicKey // peer's current ratchet key; zero until the first receive (responder)
	Ns, Nr uint32         // messages sent / derived on the current chains
	PN     uint32         // length of our previous sending chain
	// KeysCount numbers every skipped and every used receive key, as Status
	// does; MaxKeep is measured against it.
	KeysCount uint64
	Previous  []ChainEnd // closed receiving chains, newest last
}

// NewInitiator is the initial state of the active side (status-compat.md
// §6.3, doubleratchet NewWithRemoteKey): DHs is drawn from rand, DHr is the
// peer's signed prekey, (Root, Send) = KDF_RK(SK, DH(DHs, SPK)) and Recv
// stays SK.
func NewInitiator(sk RootKey, peerSignedPreKey keys.PublicKey, rand io.Reader) (State, error) {
	dhs, err := keys.GenerateKey(rand)
	if err != nil {
		return State{}, err
	}
	dh, err := keys.ECDH(dhs.Private, peerSignedPreKey)
	if err != nil {
		return State{}, fmt.Errorf("ratchet: initiator: %w", err)
	}
	root, send, _ := KDFRK(sk, dh)
	return State{Root: root, Send: send, Recv: ChainKey(sk), DHs: dhs, DHr: peerSignedPreKey}, nil
}

// NewResponder is the initial state of the passive side (status-compat.md
// §6.3, doubleratchet New): DHs is our signed prekey, no DHr, and
// Root = Send = Recv = SK. It cannot send until it has received.
func NewResponder(sk RootKey, signedPreKey keys.KeyPair) State {
	return State{Root: sk, Send: ChainKey(sk), Recv: ChainKey(sk), DHs: signedPreKey}
}

// CanSend reports whether the state has a sending chain of its own.
func (s *State) CanSend() bool { return !s.DHr.IsZero() }

// Snapshot returns the persistent form of the state.
func (s *State) Snapshot() *messages.RatchetState {
	// Every key is copied into one buffer (one allocation instead of one
	// per key: two snapshots are taken per message); each field is a
	// capacity-limited slice of it.
	buf := make([]byte, 0, 3*32+keys.PrivateKeySize+(2+len(s.Previous))*keys.PublicKeySize)
	field := func(b []byte) []byte {
		buf = append(buf, b...)
		return buf[len(buf)-len(b) : len(buf) : len(buf)]
	}
	p := &messages.RatchetState{
		RootKey:       field(s.Root[:]),
		SendChainKey:  field(s.Send[:]),
		RecvChainKey:  field(s.Recv[:]),
		DhSendPrivate: field(s.DHs.Private[:]),
		DhSendPublic:  field(s.DHs.Public[:]),
		SendN:         s.Ns,
		RecvN:         s.Nr,
		PrevSendN:     s.PN,
		KeysCount:     s.KeysCount,
	}
	if !s.DHr.IsZero() {
		p.DhRecv = field(s.DHr[:])
	}
	if len(s.Previous) > 0 {
		ends := make([]messages.ChainEnd, len(s.Previous))
		p.PreviousChains = make([]*messages.ChainEnd, len(s.Previous))
		for i, c := range s.Previous {
			ends[i].Key, ends[i].Length = field(c.Key[:]), c.Length
			p.PreviousChains[i] = &ends[i]
		}
	}
	return p
}

// StateFromSnapshot parses and validates a persisted state: every key is
// checked, DHs.Public must match DHs.Private, and the previous chains are
// bounded by the limits.
func StateFromSnapshot(p *messages.RatchetState, lim Limits) (State, error) {
	lim = lim.withDefaults()
	var s State
	if p == nil {
		return s, fmt.Errorf("%w: no state", ErrInvalidState)
	}
	for _, f := range []struct {
		dst  []byte
		src  []byte
		name string
	}{{s.Root[:], p.GetRootKey(), "root key"}, {s.Send[:], p.GetSendChainKey(), "send chain key"}, {s.Recv[:], p.GetRecvChainKey(), "recv chain key"}} {
		if len(f.src) != 32 {
			return State{}, fmt.Errorf("%w: %s is %d bytes", ErrInvalidState, f.name, len(f.src))
		}
		copy(f.dst, f.src)
	}
	priv, err := keys.ParsePrivateKey(p.GetDhSendPrivate())
	if err != nil {
		return State{}, fmt.Errorf("%w: ratchet private key: %w", ErrInvalidState, err)
	}
	pub, err := keys.ParsePublicKey(p.GetDhSendPublic())
	if err != nil {
		return State{}, fmt.Errorf("%w: ratchet public key: %w", ErrInvalidState, err)
	}
	if want, err := priv.Public(); err != nil || !want.Equal(pub) {
		return State{}, fmt.Errorf("%w: ratchet key pair does not match", ErrInvalidState)
	}
	s.DHs = keys.KeyPair{Private: priv, Public: pub}
	if len(p.GetDhRecv()) > 0 {
		if s.DHr, err = keys.ParsePublicKey(p.GetDhRecv()); err != nil {
			return State{}, fmt.Errorf("%w: peer ratchet key: %w", ErrInvalidState, err)
		}
	}
	if len(p.GetPreviousChains()) > lim.MaxPreviousChains {
		return State{}, fmt.Errorf("%w: %d previous chains, limit %d", ErrInvalidState, len(p.GetPreviousChains()), lim.MaxPreviousChains)
	}
	for _, c := range p.GetPreviousChains() {
		k, err := keys.ParsePublicKey(c.GetKey())
		if err != nil {
			return State{}, fmt.Errorf("%w: previous chain key: %w", ErrInvalidState, err)
		}
		s.Previous = append(s.Previous, ChainEnd{Key: k, Length: c.GetLength()})
	}
	s.Ns, s.Nr, s.PN, s.KeysCount = p.GetSendN(), p.GetRecvN(), p.GetPrevSendN(), p.GetKeysCount()
	return s, nil
}

// Wipe overwrites the secrets held by the state. Go may have copied them
// elsewhere (the garbage collector moves nothing, but values passed by copy
// leave copies); this is best effort, as in wireguard-go.
func (s *State) Wipe() {
	clear(s.Root[:])
	clear(s.Send[:])
	clear(s.Recv[:])
	clear(s.DHs.Private[:])
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
