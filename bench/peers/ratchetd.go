package peers

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
)

// Installation ids of the two sides (Status uses UUID v4 strings).
const (
	installationA = "0a6a3f2e-8a54-4c36-9f45-1f1e6c0c2a11"
	installationB = "6f9cbd86-3f5b-4d3e-9a8e-0b1c2d3e4f50"
)

func ratchetdImpl() Impl {
	return Impl{
		Name: "ratchetd",
		Summary: "ratchetd crypto/ratchet Session + crypto/x3dh + crypto/bundle, straight-line: " +
			"Encrypt → EncryptedMessageProtocol (protobuf) → Unmarshal → ParseHeader (validates the " +
			"ratchet key and the bundle id; crypto/keys remembers keys already validated) → " +
			"Session.Decrypt; used keys are consumed",
		NewPair:       newRatchetdPair,
		NewHandshaker: newRatchetdHandshaker,
	}
}

type ratchetdPair struct {
	s        [2]*ratchet.Session
	bundleID keys.PublicKey // the responder's SPK, in every DR header
}

func newRatchetdPair() (Pair, error) {
	ika, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ikb, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	spk, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ini, err := x3dh.Initiate(rand.Reader, ika.Private, ikb.Public, spk.Public)
	if err != nil {
		return nil, err
	}
	sk, err := x3dh.Passive(ikb.Private, spk.Private, ika.Public, ini.Ephemeral)
	if err != nil {
		return nil, err
	}
	a, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), spk.Public, rand.Reader)
	if err != nil {
		return nil, err
	}
	b := ratchet.NewResponder(ratchet.RootKey(sk), spk)
	p := &ratchetdPair{
		s:        [2]*ratchet.Session{{State: a, Limits: ratchet.DefaultLimits()}, {State: b, Limits: ratchet.DefaultLimits()}},
		bundleID: spk.Public,
	}
	return p, establish(p)
}

// establish sends one message each way, so that both sides can send.
func establish(p Pair) error {
	pl := Payload()
	for _, from := range []int{0, 1} {
		got, err := p.Send(from, pl)
		if err != nil {
			return fmt.Errorf("peers: set-up message %d: %w", from, err)
		}
		if err := checkPlaintext(got, pl); err != nil {
			return err
		}
	}
	return nil
}

func (p *ratchetdPair) Send(from int, payload []byte) ([]byte, error) {
	h, ct, err := p.s[from].Encrypt(payload)
	if err != nil {
		return nil, err
	}
	wire, err := proto.Marshal(&messages.EncryptedMessageProtocol{DrHeader: h.Proto(p.bundleID), Payload: ct})
	if err != nil {
		return nil, err
	}
	var m messages.EncryptedMessageProtocol
	if err := proto.Unmarshal(wire, &m); err != nil {
		return nil, err
	}
	rh, bid, err := ratchet.ParseHeader(m.GetDrHeader())
	if err != nil {
		return nil, err
	}
	if !bid.Equal(p.bundleID) {
		return nil, errors.New("peers: ratchetd: bundle id mismatch")
	}
	r, _, err := p.s[other(from)].Decrypt(rh, m.GetPayload(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return r.Plaintext, nil
}

// ratchetdHandshaker holds the long-term keys of the x3dh workload: A's
// identity, B's identity and signed prekey, and B's signed bundle as it
// arrives on the wire.
type ratchetdHandshaker struct {
	ika, ikb, spk keys.KeyPair
	bundleWire    []byte
	aIdentityWire []byte // A's identity as the transport hands it to B
}

func newRatchetdHandshaker() (Handshaker, error) {
	var h ratchetdHandshaker
	var err error
	for _, k := range []*keys.KeyPair{&h.ika, &h.ikb, &h.spk} {
		if *k, err = keys.GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
	}
	entries := []bundle.Entry{{InstallationID: installationB, SignedPreKey: h.spk.Public, Version: 1, ProtocolVersion: bundle.ProtocolVersion}}
	v, err := bundle.Sign(h.ikb, entries, time.Now().UnixNano())
	if err != nil {
		return nil, err
	}
	if h.bundleWire, err = proto.Marshal(v.Proto()); err != nil {
		return nil, err
	}
	h.aIdentityWire = h.ika.Public.Bytes()
	return &h, nil
}

func (h *ratchetdHandshaker) Handshake(payload []byte) ([]byte, error) {
	// --- A: process B's bundle, X3DH, first chain, first message.
	var bp messages.Bundle
	if err := proto.Unmarshal(h.bundleWire, &bp); err != nil {
		return nil, err
	}
	v, err := bundle.Verify(&bp)
	if err != nil {
		return nil, err
	}
	e, ok := v.Entry(installationB)
	if !ok {
		return nil, errors.New("peers: ratchetd: no bundle entry")
	}
	ini, err := x3dh.Initiate(rand.Reader, h.ika.Private, v.Identity, e.SignedPreKey)
	if err != nil {
		return nil, err
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), e.SignedPreKey, rand.Reader)
	if err != nil {
		return nil, err
	}
	a := ratchet.Session{State: st, Limits: ratchet.DefaultLimits()}
	dh, ct, err := a.Encrypt(payload)
	if err != nil {
		return nil, err
	}
	wire, err := proto.Marshal(&messages.EncryptedMessageProtocol{
		X3DhHeader: &messages.X3DHHeader{Key: ini.Ephemeral[:], Id: e.SignedPreKey[:]},
		DrHeader:   dh.Proto(e.SignedPreKey),
		Payload:    ct,
	})
	if err != nil {
		return nil, err
	}

	// --- B: X3DH from the header, responder state, first decrypt.
	var m messages.EncryptedMessageProtocol
	if err := proto.Unmarshal(wire, &m); err != nil {
		return nil, err
	}
	rh, bid, err := ratchet.ParseHeader(m.GetDrHeader())
	if err != nil {
		return nil, err
	}
	if !bid.Equal(h.spk.Public) || !bytes.Equal(m.GetX3DhHeader().GetId(), h.spk.Public[:]) {
		return nil, errors.New("peers: ratchetd: unknown signed prekey")
	}
	ek, err := keys.ParsePublicKey(m.GetX3DhHeader().GetKey())
	if err != nil {
		return nil, err
	}
	peer, err := keys.ParsePublicKey(h.aIdentityWire)
	if err != nil {
		return nil, err
	}
	sk, err := x3dh.Passive(h.ikb.Private, h.spk.Private, peer, ek)
	if err != nil {
		return nil, err
	}
	b := ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), h.spk), Limits: ratchet.DefaultLimits()}
	r, _, err := b.Decrypt(rh, m.GetPayload(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return r.Plaintext, nil
}
