package vectors

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/dhfallback"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
)

// hexBytes decodes a lowercase-hex JSON string.
type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = d
	return nil
}

type file struct {
	X3DH []struct {
		Name                      string
		InitiatorIdentityPriv     hexBytes `json:"initiator_identity_priv"`
		InitiatorEphemeralPriv    hexBytes `json:"initiator_ephemeral_priv"`
		ResponderIdentityPriv     hexBytes `json:"responder_identity_priv"`
		ResponderSignedPrekeyPriv hexBytes `json:"responder_signed_prekey_priv"`
		DH1, DH2, DH3, SK         hexBytes
	} `json:"x3dh"`
	Bundles []struct {
		Name         string
		IdentityPriv hexBytes `json:"identity_priv"`
		Timestamp    string
		Entries      []struct {
			InstallationID  string   `json:"installation_id"`
			SignedPreKey    hexBytes `json:"signed_pre_key"`
			Version         uint32
			ProtocolVersion uint32 `json:"protocol_version"`
		}
		SignatureMaterial hexBytes `json:"signature_material"`
		Digest            hexBytes
		Signature         hexBytes
		BundleProtobuf    hexBytes `json:"bundle_protobuf"`
	}
	KDFRK []struct {
		Name       string
		RootKey    hexBytes `json:"root_key"`
		DHOutput   hexBytes `json:"dh_output"`
		NewRootKey hexBytes `json:"new_root_key"`
		ChainKey   hexBytes `json:"chain_key"`
		HeaderKey  hexBytes `json:"header_key"`
	} `json:"kdf_rk"`
	KDFCK []struct {
		Name         string
		ChainKey     hexBytes `json:"chain_key"`
		NextChainKey hexBytes `json:"next_chain_key"`
		MessageKey   hexBytes `json:"message_key"`
	} `json:"kdf_ck"`
	Encrypt []struct {
		Name           string
		MessageKey     hexBytes `json:"message_key"`
		Plaintext      hexBytes
		AssociatedData hexBytes `json:"associated_data"`
		Ciphertext     hexBytes
	}
	DHFallback []struct {
		Name                  string
		EphemeralPriv         hexBytes `json:"ephemeral_priv"`
		RecipientIdentityPriv hexBytes `json:"recipient_identity_priv"`
		Nonce                 hexBytes
		Plaintext             hexBytes
		SharedKey             hexBytes `json:"shared_key"`
		Payload               hexBytes
	} `json:"dh_fallback"`
	Sessions []session
}

type party struct {
	IdentityPriv      hexBytes   `json:"identity_priv"`
	InstallationID    string     `json:"installation_id"`
	X3DHEphemeralPriv hexBytes   `json:"x3dh_ephemeral_priv"`
	SignedPrekeyPriv  hexBytes   `json:"signed_prekey_priv"`
	RatchetPrivs      []hexBytes `json:"ratchet_privs"`
}

type session struct {
	Name  string
	SK    hexBytes `json:"sk"`
	Alice party
	Bob   party
	Steps []struct {
		Op        string
		From, To  string
		ID        string
		Plaintext hexBytes
		Expect    *struct {
			DRKey          hexBytes `json:"dr_key"`
			N, PN          uint32
			BundleID       hexBytes `json:"bundle_id"`
			X3DHKey        hexBytes `json:"x3dh_key"`
			Payload        hexBytes
			AssociatedData hexBytes `json:"associated_data"`
		}
		ExpectPlaintext hexBytes `json:"expect_plaintext"`
		Reason          string
		TamperIndex     int      `json:"tamper_index"`
		TamperedPayload hexBytes `json:"tampered_payload"`
	}
}

// vectorsPath is RATCHETD_VECTORS, or Status's vectors in ../shared.
func vectorsPath(t *testing.T) string {
	if p := os.Getenv("RATCHETD_VECTORS"); p != "" {
		return p
	}
	// crypto/vectors → repository root → ../shared
	p, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "reference", "vectors", "status-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T) *file {
	t.Helper()
	p := vectorsPath(t)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("vectors: cannot read %s: %v", p, err)
	}
	var f file
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("vectors: cannot parse %s: %v", p, err)
	}
	return &f
}

func priv(t *testing.T, what string, b []byte) keys.KeyPair {
	t.Helper()
	sk, err := keys.ParsePrivateKey(b)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	kp, err := sk.KeyPair()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return kp
}

func eq(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %x\nwant %x", what, got, want)
	}
}

// TestStatusVectors checks every section of the vector file and logs the
// counts it checked.
func TestStatusVectors(t *testing.T) {
	f := load(t)
	var n struct{ x3dh, bundles, kdfrk, kdfck, encrypt, dh, sessions int }
	sections := map[string]int{
		"x3dh": len(f.X3DH), "bundles": len(f.Bundles), "kdf_rk": len(f.KDFRK), "kdf_ck": len(f.KDFCK),
		"encrypt": len(f.Encrypt), "dh_fallback": len(f.DHFallback), "sessions": len(f.Sessions),
	}
	for name, c := range sections {
		if c == 0 {
			t.Errorf("vectors: section %q is missing or empty", name)
		}
	}

	for _, v := range f.X3DH {
		t.Run("x3dh/"+v.Name, func(t *testing.T) {
			ika := priv(t, "initiator identity", v.InitiatorIdentityPriv)
			eka := priv(t, "initiator ephemeral", v.InitiatorEphemeralPriv)
			ikb := priv(t, "responder identity", v.ResponderIdentityPriv)
			spkb := priv(t, "responder signed prekey", v.ResponderSignedPrekeyPriv)
			for i, c := range []struct {
				a      keys.PrivateKey
				b      keys.PublicKey
				expect []byte
			}{{ika.Private, spkb.Public, v.DH1}, {eka.Private, ikb.Public, v.DH2}, {eka.Private, spkb.Public, v.DH3}} {
				got, err := keys.ECDH(c.a, c.b)
				if err != nil {
					t.Fatal(err)
				}
				eq(t, fmt.Sprintf("dh%d", i+1), got[:], c.expect)
			}
			act, err := x3dh.Active(ika.Private, eka.Private, ikb.Public, spkb.Public)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "active sk", act[:], v.SK)
			pas, err := x3dh.Passive(ikb.Private, spkb.Private, ika.Public, eka.Public)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "passive sk", pas[:], v.SK)
			ini, err := x3dh.Initiate(bytes.NewReader(v.InitiatorEphemeralPriv), ika.Private, ikb.Public, spkb.Public)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "initiate sk", ini.SK[:], v.SK)
			eq(t, "initiate ephemeral", ini.Ephemeral[:], eka.Public[:])
		})
		n.x3dh++
	}

	for _, v := range f.Bundles {
		t.Run("bundles/"+v.Name, func(t *testing.T) {
			id := priv(t, "identity", v.IdentityPriv)
			ts, err := strconv.ParseInt(v.Timestamp, 10, 64)
			if err != nil {
				t.Fatalf("timestamp %q: %v", v.Timestamp, err)
			}
			var entries []bundle.Entry
			for _, e := range v.Entries {
				spk, err := keys.ParsePublicKey(e.SignedPreKey)
				if err != nil {
					t.Fatal(err)
				}
				entries = append(entries, bundle.Entry{InstallationID: e.InstallationID, SignedPreKey: spk, Version: e.Version, ProtocolVersion: e.ProtocolVersion})
			}
			eq(t, "signature material", bundle.SignatureMaterial(entries, ts), v.SignatureMaterial)
			d := bundle.Digest(entries, ts)
			eq(t, "digest", d[:], v.Digest)
			signed, err := bundle.Sign(id, entries, ts)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "signature", signed.Signature[:], v.Signature)
			wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(signed.Proto())
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "bundle protobuf", wire, v.BundleProtobuf)
			var parsed messages.Bundle
			if err := proto.Unmarshal(v.BundleProtobuf, &parsed); err != nil {
				t.Fatal(err)
			}
			ver, err := bundle.Verify(&parsed)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if ver.Identity != id.Public || ver.Timestamp != ts || len(ver.Entries) != len(v.Entries) {
				t.Errorf("verified bundle differs: %+v", ver)
			}
		})
		n.bundles++
	}

	for _, v := range f.KDFRK {
		t.Run("kdf_rk/"+v.Name, func(t *testing.T) {
			root, ck, hk := ratchet.KDFRK(ratchet.RootKey(v.RootKey), [32]byte(v.DHOutput))
			eq(t, "root", root[:], v.NewRootKey)
			eq(t, "chain", ck[:], v.ChainKey)
			eq(t, "header", hk[:], v.HeaderKey)
		})
		n.kdfrk++
	}

	for _, v := range f.KDFCK {
		t.Run("kdf_ck/"+v.Name, func(t *testing.T) {
			next, mk := ratchet.KDFCK(ratchet.ChainKey(v.ChainKey))
			eq(t, "next", next[:], v.NextChainKey)
			eq(t, "mk", mk[:], v.MessageKey)
		})
		n.kdfck++
	}

	for _, v := range f.Encrypt {
		t.Run("encrypt/"+v.Name, func(t *testing.T) {
			mk := ratchet.MessageKey(v.MessageKey)
			eq(t, "ciphertext", ratchet.Seal(mk, v.Plaintext, v.AssociatedData), v.Ciphertext)
			pt, err := ratchet.Open(mk, v.Ciphertext, v.AssociatedData)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "plaintext", pt, v.Plaintext)
		})
		n.encrypt++
	}

	for _, v := range f.DHFallback {
		t.Run("dh_fallback/"+v.Name, func(t *testing.T) {
			ek := priv(t, "ephemeral", v.EphemeralPriv)
			rcpt := priv(t, "recipient", v.RecipientIdentityPriv)
			key, err := keys.ECDH(ek.Private, rcpt.Public)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "shared key", key[:], v.SharedKey)
			script := bytes.NewReader(append(append([]byte{}, v.EphemeralPriv...), v.Nonce...))
			pub, payload, err := dhfallback.Seal(script, rcpt.Public, v.Plaintext)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "ephemeral public", pub[:], ek.Public[:])
			eq(t, "payload", payload, v.Payload)
			pt, err := dhfallback.Open(rcpt.Private, ek.Public, v.Payload)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "plaintext", pt, v.Plaintext)
		})
		n.dh++
	}

	for _, s := range f.Sessions {
		t.Run("sessions/"+s.Name, func(t *testing.T) { replay(t, s) })
		n.sessions++
	}

	t.Logf("vectors: x3dh=%d bundles=%d kdf_rk=%d kdf_ck=%d encrypt=%d dh_fallback=%d sessions=%d",
		n.x3dh, n.bundles, n.kdfrk, n.kdfck, n.encrypt, n.dh, n.sessions)
}

// side is one party of a replayed session.
type side struct {
	identity     keys.KeyPair
	peerIdentity keys.PublicKey // from the transport signature, in the engine
	rand         *bytes.Reader  // scripted ratchet keys, in order
	sess         *ratchet.Session
	// x3dh is the initiator's ephemeral key, attached until the session is
	// confirmed by a ratchet message from the peer (status-compat.md §5.3).
	x3dh      keys.PublicKey
	confirmed bool
}

func script(privs []hexBytes) *bytes.Reader {
	var b []byte
	for _, p := range privs {
		b = append(b, p...)
	}
	return bytes.NewReader(b)
}

// replay runs a session's steps: Alice initiates X3DH against Bob's signed
// prekey; Bob's session is created by the first message he can decrypt.
// Messages go through the wire encoding (EncryptedMessageProtocol).
func replay(t *testing.T, s session) {
	alice := &side{identity: priv(t, "alice identity", s.Alice.IdentityPriv), rand: script(s.Alice.RatchetPrivs)}
	bob := &side{identity: priv(t, "bob identity", s.Bob.IdentityPriv), rand: script(s.Bob.RatchetPrivs)}
	alice.peerIdentity, bob.peerIdentity = bob.identity.Public, alice.identity.Public
	spk := priv(t, "bob signed prekey", s.Bob.SignedPrekeyPriv)
	bundleID := spk.Public

	ini, err := x3dh.Initiate(bytes.NewReader(s.Alice.X3DHEphemeralPriv), alice.identity.Private, bob.identity.Public, spk.Public)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "sk", ini.SK[:], s.SK)
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), spk.Public, alice.rand)
	if err != nil {
		t.Fatal(err)
	}
	alice.sess = &ratchet.Session{State: st, Limits: ratchet.DefaultLimits()}
	alice.x3dh = ini.Ephemeral

	parties := map[string]*side{"alice": alice, "bob": bob}
	wire := map[string][]byte{}

	for i, step := range s.Steps {
		where := fmt.Sprintf("step %d (%s %s)", i, step.Op, step.ID)
		switch step.Op {
		case "encrypt":
			p := parties[step.From]
			if p == nil || p.sess == nil {
				t.Fatalf("%s: %q has no session", where, step.From)
			}
			h, ct, err := p.sess.Encrypt(step.Plaintext)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			m := &messages.EncryptedMessageProtocol{DrHeader: h.Proto(bundleID), Payload: ct}
			if !p.x3dh.IsZero() && !p.confirmed {
				m.X3DhHeader = &messages.X3DHHeader{Key: p.x3dh[:], Id: bundleID[:]}
			}
			if e := step.Expect; e != nil {
				ad := h.AD()
				eq(t, where+" dr_key", h.DH[:], e.DRKey)
				eq(t, where+" bundle_id", m.DrHeader.Id, e.BundleID)
				eq(t, where+" x3dh_key", m.GetX3DhHeader().GetKey(), e.X3DHKey)
				eq(t, where+" payload", ct, e.Payload)
				eq(t, where+" associated_data", ad[:], e.AssociatedData)
				if h.N != e.N || h.PN != e.PN {
					t.Errorf("%s: n, pn = %d, %d; want %d, %d", where, h.N, h.PN, e.N, e.PN)
				}
			}
			b, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			wire[step.ID] = b
		case "decrypt", "decrypt_fails":
			p := parties[step.To]
			raw, ok := wire[step.ID]
			if p == nil || !ok {
				t.Fatalf("%s: unknown party or message", where)
			}
			if step.Op == "decrypt_fails" && step.Reason == "tampered" {
				var m messages.EncryptedMessageProtocol
				if err := proto.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				want := append([]byte{}, m.Payload...)
				if step.TamperIndex < 0 || step.TamperIndex >= len(want) {
					t.Fatalf("%s: tamper_index %d out of range", where, step.TamperIndex)
				}
				want[step.TamperIndex] ^= 0x01
				eq(t, where+" tampered_payload", step.TamperedPayload, want)
				m.Payload = step.TamperedPayload
				if raw, err = proto.Marshal(&m); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(p)
			pt, err := deliver(p, raw, spk, p == bob)
			if step.Op == "decrypt" {
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				eq(t, where+" plaintext", pt, step.ExpectPlaintext)
				continue
			}
			want := ratchet.ErrInvalidMAC
			if step.Reason == "too_many_skipped" {
				want = ratchet.ErrTooManySkipped
			} else if step.Reason != "tampered" {
				t.Fatalf("%s: unknown reason %q", where, step.Reason)
			}
			if !errors.Is(err, want) {
				t.Errorf("%s: err = %v, want %v", where, err, want)
			}
			if after := snapshot(p); !reflect.DeepEqual(before, after) {
				t.Errorf("%s: a failed decrypt changed the state", where)
			}
		default:
			t.Fatalf("%s: unknown op %q", where, step.Op)
		}
	}
}

// deliver decrypts a wire message for p. For the responder, the first
// message that decrypts creates the session (passive X3DH, then
// NewResponder); a message that fails creates nothing.
func deliver(p *side, raw []byte, spk keys.KeyPair, responder bool) ([]byte, error) {
	var m messages.EncryptedMessageProtocol
	if err := proto.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	h, id, err := ratchet.ParseHeader(m.DrHeader)
	if err != nil {
		return nil, err
	}
	if !id.Equal(spk.Public) {
		return nil, ratchet.ErrNoSession
	}
	// Status confirms the session on any ratchet message that names it,
	// before trying to decrypt (status-compat.md §5.3).
	p.confirmed = true
	sess := p.sess
	if sess == nil && responder {
		if m.X3DhHeader == nil {
			return nil, ratchet.ErrNoSession
		}
		ek, err := keys.ParsePublicKey(m.X3DhHeader.Key)
		if err != nil {
			return nil, err
		}
		sk, err := x3dh.Passive(p.identity.Private, spk.Private, p.peerIdentity, ek)
		if err != nil {
			return nil, err
		}
		sess = &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), spk), Limits: ratchet.DefaultLimits()}
	}
	if sess == nil {
		return nil, ratchet.ErrNoSession
	}
	r, _, err := sess.Decrypt(h, m.Payload, p.rand)
	if err != nil {
		return nil, err
	}
	p.sess = sess
	return r.Plaintext, nil
}

// snapshot is everything of p that a failed decrypt must leave unchanged.
func snapshot(p *side) any {
	if p.sess == nil {
		return nil
	}
	return struct {
		State   []byte
		Skipped []ratchet.SkippedKey
		Rand    int
	}{mustMarshal(p.sess.State.Snapshot()), p.sess.Skipped.All(), p.rand.Len()}
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
