package peers

import (
	"context"
	"errors"
	"fmt"

	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/libsignal/tests"
	"go.mau.fi/libsignal/util/keyhelper"
	"go.mau.fi/libsignal/util/optional"
)

func libsignalImpl() Impl {
	return Impl{
		Name: "libsignal",
		Summary: "go.mau.fi/libsignal v0.2.1 as shipped (whatsmeow's Signal port): X25519/XEdDSA, " +
			"AES-256-CBC + HMAC-SHA256, library in-memory stores (tests package, records kept as " +
			"pointers, no serialization); SessionCipher.Encrypt → Serialize (protobuf) → " +
			"New*MessageFromBytes → Decrypt/DecryptMessage; bundles carry no one-time prekey (as Status)",
		NewPair:       newLibsignalPair,
		NewHandshaker: newLibsignalHandshaker,
	}
}

// libsignalParty is one side's long-term material.
type libsignalParty struct {
	addr  *protocol.SignalAddress
	ik    *identity.KeyPair
	regID uint32
	spk   *record.SignedPreKey
}

func newLibsignalParty(name string, deviceID uint32, ser *serialize.Serializer) (*libsignalParty, error) {
	ik, err := keyhelper.GenerateIdentityKeyPair()
	if err != nil {
		return nil, err
	}
	spk, err := keyhelper.GenerateSignedPreKey(ik, 1, ser.SignedPreKeyRecord)
	if err != nil {
		return nil, err
	}
	return &libsignalParty{
		addr:  protocol.NewSignalAddress(name, deviceID),
		ik:    ik,
		regID: keyhelper.GenerateRegistrationID(),
		spk:   spk,
	}, nil
}

// bundle is the party's prekey bundle without a one-time prekey: Status
// uses none, so X3DH has 3 DH on each side in every implementation.
func (p *libsignalParty) bundle() *prekey.Bundle {
	return prekey.NewBundle(p.regID, p.addr.DeviceID(), optional.NewEmptyUint32(), p.spk.ID(),
		nil, p.spk.KeyPair().PublicKey(), p.spk.Signature(), p.ik.PublicKey())
}

// libsignalEnd is one side's stores, builder and cipher for one remote
// party. Stores are fresh per end, so nothing accumulates across sessions.
type libsignalEnd struct {
	builder *session.Builder
	cipher  *session.Cipher
}

func newLibsignalEnd(self, remote *libsignalParty, spks *tests.InMemorySignedPreKey, ser *serialize.Serializer) *libsignalEnd {
	b := session.NewBuilder(
		tests.NewInMemorySession(ser),
		tests.NewInMemoryPreKey(),
		spks,
		tests.NewInMemoryIdentityKey(self.ik, self.regID),
		remote.addr,
		ser,
	)
	return &libsignalEnd{builder: b, cipher: session.NewCipher(b, remote.addr)}
}

func ownSignedPreKeys(p *libsignalParty, ser *serialize.Serializer) *tests.InMemorySignedPreKey {
	s := tests.NewInMemorySignedPreKey()
	_ = s.StoreSignedPreKey(context.Background(), p.spk.ID(), p.spk)
	return s
}

// libsignalCarry encrypts on `from`, serializes, parses and decrypts on `to`.
func libsignalCarry(ctx context.Context, ser *serialize.Serializer, from, to *libsignalEnd, payload []byte) ([]byte, error) {
	ct, err := from.cipher.Encrypt(ctx, payload)
	if err != nil {
		return nil, err
	}
	wire := ct.Serialize()
	switch ct.(type) {
	case *protocol.SignalMessage:
		m, err := protocol.NewSignalMessageFromBytes(wire, ser.SignalMessage)
		if err != nil {
			return nil, err
		}
		return to.cipher.Decrypt(ctx, m)
	case *protocol.PreKeySignalMessage:
		m, err := protocol.NewPreKeySignalMessageFromBytes(wire, ser.PreKeySignalMessage, ser.SignalMessage)
		if err != nil {
			return nil, err
		}
		return to.cipher.DecryptMessage(ctx, m)
	default:
		return nil, fmt.Errorf("peers: libsignal: unexpected message type %T", ct)
	}
}

type libsignalPair struct {
	ser  *serialize.Serializer
	ends [2]*libsignalEnd
}

func newLibsignalPair() (Pair, error) {
	ser := serialize.NewProtoBufSerializer()
	a, err := newLibsignalParty("alice", 1, ser)
	if err != nil {
		return nil, err
	}
	b, err := newLibsignalParty("bob", 1, ser)
	if err != nil {
		return nil, err
	}
	p := &libsignalPair{ser: ser}
	p.ends[0] = newLibsignalEnd(a, b, ownSignedPreKeys(a, ser), ser)
	p.ends[1] = newLibsignalEnd(b, a, ownSignedPreKeys(b, ser), ser)
	if err := p.ends[0].builder.ProcessBundle(context.Background(), b.bundle()); err != nil {
		return nil, err
	}
	return p, establish(p)
}

func (p *libsignalPair) Send(from int, payload []byte) ([]byte, error) {
	return libsignalCarry(context.Background(), p.ser, p.ends[from], p.ends[other(from)], payload)
}

type libsignalHandshaker struct {
	ser     *serialize.Serializer
	a, b    *libsignalParty
	bSPKs   *tests.InMemorySignedPreKey
	bBundle *prekey.Bundle
	aSPKs   *tests.InMemorySignedPreKey
}

func newLibsignalHandshaker() (Handshaker, error) {
	ser := serialize.NewProtoBufSerializer()
	a, err := newLibsignalParty("alice", 1, ser)
	if err != nil {
		return nil, err
	}
	b, err := newLibsignalParty("bob", 1, ser)
	if err != nil {
		return nil, err
	}
	return &libsignalHandshaker{
		ser: ser, a: a, b: b,
		bSPKs:   ownSignedPreKeys(b, ser),
		aSPKs:   ownSignedPreKeys(a, ser),
		bBundle: b.bundle(),
	}, nil
}

func (h *libsignalHandshaker) Handshake(payload []byte) ([]byte, error) {
	ctx := context.Background()
	// Fresh session and identity stores on both sides: a new session with
	// no earlier state to archive.
	a := newLibsignalEnd(h.a, h.b, h.aSPKs, h.ser)
	b := newLibsignalEnd(h.b, h.a, h.bSPKs, h.ser)
	if err := a.builder.ProcessBundle(ctx, h.bBundle); err != nil {
		return nil, err
	}
	ct, err := a.cipher.Encrypt(ctx, payload)
	if err != nil {
		return nil, err
	}
	if _, ok := ct.(*protocol.PreKeySignalMessage); !ok {
		return nil, errors.New("peers: libsignal: first message is not a prekey message")
	}
	m, err := protocol.NewPreKeySignalMessageFromBytes(ct.Serialize(), h.ser.PreKeySignalMessage, h.ser.SignalMessage)
	if err != nil {
		return nil, err
	}
	return b.cipher.DecryptMessage(ctx, m)
}
