package peers

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	gethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/crypto/ecies"
	dr "github.com/status-im/doubleratchet"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
)

// The variants of github.com/status-im/doubleratchet v3.0.0 under
// comparison. All use Status's limits (MaxSkip 1000, MaxKeep 3000, 2000 keys
// per session; status-compat.md §6.1) and the library's in-memory key store.
type statusVariant int

const (
	// statusX25519: the library's DefaultCrypto (Curve25519 via
	// x/crypto/curve25519); used keys kept, as the library does by default.
	statusX25519 statusVariant = iota
	// statusK1: Status's secp256k1 crypto with the calls status-go makes (a
	// DH re-parses the private scalar, which recomputes its public key:
	// performance.md finding 2); used keys kept, as Status does in
	// production (status-compat.md §6.6).
	statusK1
	// statusK1Del: statusK1, plus DeleteMk after each decrypt (the
	// "confirmation" status-go no longer calls).
	statusK1Del
	// statusK1LeanDel: statusK1Del with ratchet key pairs kept parsed, so a
	// DH is one scalar multiplication: the best this library does with
	// Status's primitives.
	statusK1LeanDel
)

type statusConfig struct {
	name     string
	summary  string
	k1       bool // secp256k1 (Status) instead of DefaultCrypto
	lean     bool
	deleteMk bool
}

func (v statusVariant) config() statusConfig {
	switch v {
	case statusX25519:
		return statusConfig{name: "status-x25519",
			summary: "status-im/doubleratchet v3.0.0 with its DefaultCrypto (X25519 via x/crypto/curve25519, " +
				"AES-256-CTR+HMAC, same KDFs); in-memory KeysStorage keeps every used key (TruncateMks/" +
				"DeleteOldMks scan it on each decrypt, and its per-ratchet-key map never shrinks, so in " +
				"pingpong it grows by one entry per received message); wire = EncryptedMessageProtocol; " +
				"no x3dh path (Status composes X3DH only over secp256k1)"}
	case statusK1:
		return statusConfig{name: "status-secp256k1", k1: true,
			summary: "status-im/doubleratchet v3.0.0 + secp256k1 Crypto per status-compat.md §6.2 " +
				"(go-ethereum, status-go's calls: DH = ToECDSA + DecompressPubkey + ecies.GenerateShared); " +
				"used keys kept as Status does; x3dh = status-go's composition (bundle verify, " +
				"3×GenerateShared + Keccak, dr.NewWithRemoteKey / dr.New)"}
	case statusK1Del:
		return statusConfig{name: "status-secp256k1-del", k1: true, deleteMk: true,
			summary: "status-secp256k1 + DeleteMk after every decrypt (keys not kept)"}
	case statusK1LeanDel:
		return statusConfig{name: "status-secp256k1-lean-del", k1: true, lean: true, deleteMk: true,
			summary: "status-secp256k1-del with parsed ratchet keys kept (one scalar multiplication per " +
				"DH, as ratchetd)"}
	}
	panic("peers: unknown status variant")
}

func statusImpl(v statusVariant) Impl {
	c := v.config()
	im := Impl{
		Name:    c.name,
		Summary: c.summary,
		NewPair: func() (Pair, error) { return newStatusPair(c) },
	}
	if c.k1 {
		im.NewHandshaker = func() (Handshaker, error) { return newStatusHandshaker(c) }
	} else {
		im.NoX3DH = "Status composes X3DH over secp256k1 only"
	}
	if !c.deleteMk {
		// The key store fills up to MaxKeep (3000) received keys, and each
		// decrypt scans all of it.
		im.SteadyState = 3000
	}
	return im
}

func (c statusConfig) crypto() dr.Crypto {
	if c.k1 {
		return k1Crypto{lean: c.lean}
	}
	return dr.DefaultCrypto{}
}

// newSession and newRemoteSession open sessions the way status-go does
// (status-compat.md §6.1), without a session store (nothing is persisted
// in any implementation).
// The key store is the library's in-memory one, passed explicitly only so
// that tests can count what it holds (dr.New would make the same).
func (c statusConfig) newSession(id []byte, sk dr.Key, pair dr.DHPair, ks dr.KeysStorage) (dr.Session, error) {
	return dr.New(id, sk, pair, nil, dr.WithCrypto(c.crypto()), dr.WithKeysStorage(ks),
		dr.WithMaxSkip(1000), dr.WithMaxKeep(3000), dr.WithMaxMessageKeysPerSession(2000))
}

func (c statusConfig) newRemoteSession(id []byte, sk, remote dr.Key, ks dr.KeysStorage) (dr.Session, error) {
	return dr.NewWithRemoteKey(id, sk, remote, nil, dr.WithCrypto(c.crypto()), dr.WithKeysStorage(ks),
		dr.WithMaxSkip(1000), dr.WithMaxKeep(3000), dr.WithMaxMessageKeysPerSession(2000))
}

// sessionID is Status's local session id: bundle id ‖ peer installation id
// (status-compat.md §5.4).
func sessionID(bundleID []byte, peerInstallation string) []byte {
	return append(append([]byte(nil), bundleID...), peerInstallation...)
}

type statusPair struct {
	c        statusConfig
	s        [2]dr.Session
	keys     [2]*dr.KeysStorageInMemory
	bundleID []byte
}

func newStatusPair(c statusConfig) (Pair, error) {
	sk := make(dr.Key, 32)
	if _, err := io.ReadFull(rand.Reader, sk); err != nil {
		return nil, err
	}
	spk, err := c.crypto().GenerateDH()
	if err != nil {
		return nil, err
	}
	bid := spk.PublicKey()
	p := &statusPair{c: c, keys: [2]*dr.KeysStorageInMemory{{}, {}}, bundleID: bid}
	if p.s[0], err = c.newRemoteSession(sessionID(bid, installationB), sk, spk.PublicKey(), p.keys[0]); err != nil {
		return nil, err
	}
	if p.s[1], err = c.newSession(sessionID(bid, installationA), sk, spk, p.keys[1]); err != nil {
		return nil, err
	}
	return p, establish(p)
}

func (p *statusPair) Send(from int, payload []byte) ([]byte, error) {
	m, err := p.s[from].RatchetEncrypt(payload, nil)
	if err != nil {
		return nil, err
	}
	wire, err := proto.Marshal(drMessage(m, p.bundleID, nil))
	if err != nil {
		return nil, err
	}
	return statusReceive(p.c, p.s[other(from)], wire, nil)
}

// drMessage is the wire form status-go builds around a library message.
func drMessage(m dr.Message, bundleID []byte, x3dh *messages.X3DHHeader) *messages.EncryptedMessageProtocol {
	return &messages.EncryptedMessageProtocol{
		X3DhHeader: x3dh,
		DrHeader:   &messages.DRHeader{Key: m.Header.DH, N: m.Header.N, Pn: m.Header.PN, Id: bundleID},
		Payload:    m.Ciphertext,
	}
}

// statusReceive decodes wire (unless m is given) and decrypts it on s.
func statusReceive(c statusConfig, s dr.Session, wire []byte, m *messages.EncryptedMessageProtocol) ([]byte, error) {
	if m == nil {
		m = new(messages.EncryptedMessageProtocol)
		if err := proto.Unmarshal(wire, m); err != nil {
			return nil, err
		}
	}
	h := m.GetDrHeader()
	if h == nil {
		return nil, errors.New("peers: status: no DR header")
	}
	msg := dr.Message{
		Header:     dr.MessageHeader{DH: dr.Key(h.GetKey()), N: h.GetN(), PN: h.GetPn()},
		Ciphertext: m.GetPayload(),
	}
	pt, err := s.RatchetDecrypt(msg, nil)
	if err != nil {
		return nil, err
	}
	if c.deleteMk {
		if err := s.DeleteMk(msg.Header.DH, msg.Header.N); err != nil {
			return nil, err
		}
	}
	return pt, nil
}

// --- Status's Double Ratchet crypto over secp256k1 (status-compat.md §6.2).

const (
	k1RootInfo    = "rsZUpEuXUqqwXBvSy3EcievAh4cMj6QL"
	k1MessageInfo = "pcwSByyx2CRdryCffXJwy7xgVZWtW5Sh"
)

// k1Crypto implements dr.Crypto with secp256k1 ratchet keys (33-byte
// compressed public keys, 32-byte scalars, DH = x-coordinate), Status's KDF
// constants and AES-256-CTR + HMAC-SHA256. With lean unset it makes the
// calls status-go makes; with lean set a generated key pair keeps its parsed
// private key and a DH is a single scalar multiplication.
type k1Crypto struct{ lean bool }

// k1Pair is a ratchet key pair. key is the parsed private key, kept only by
// the lean crypto.
type k1Pair struct {
	priv, pub dr.Key
	key       *ecdsa.PrivateKey
}

func (p k1Pair) PrivateKey() dr.Key { return p.priv }
func (p k1Pair) PublicKey() dr.Key  { return p.pub }

func (c k1Crypto) GenerateDH() (dr.DHPair, error) {
	k, err := gethcrypto.GenerateKey()
	if err != nil {
		return nil, err
	}
	p := k1Pair{priv: gethcrypto.FromECDSA(k), pub: gethcrypto.CompressPubkey(&k.PublicKey)}
	if c.lean {
		p.key = k
	}
	return p, nil
}

func (c k1Crypto) DH(pair dr.DHPair, pub dr.Key) (dr.Key, error) {
	var priv *ecdsa.PrivateKey
	if p, ok := pair.(k1Pair); ok && p.key != nil {
		priv = p.key
	} else {
		// status-go parses the scalar on every DH; ToECDSA also derives the
		// public key, a scalar multiplication whose result is unused.
		k, err := gethcrypto.ToECDSA(pair.PrivateKey())
		if err != nil {
			return nil, err
		}
		priv = k
	}
	return k1Shared(priv, pub)
}

// k1Shared is Status's DH: the x-coordinate of priv·pub, 32 bytes, through
// ecies.GenerateShared(16, 16).
func k1Shared(priv *ecdsa.PrivateKey, compressed []byte) ([]byte, error) {
	pk, err := gethcrypto.DecompressPubkey(compressed)
	if err != nil {
		return nil, err
	}
	return k1SharedParsed(priv, pk)
}

func k1SharedParsed(priv *ecdsa.PrivateKey, pub *ecdsa.PublicKey) ([]byte, error) {
	return ecies.ImportECDSA(priv).GenerateShared(ecies.ImportECDSAPublic(pub), 16, 16)
}

func (c k1Crypto) KdfRK(rk, dhOut dr.Key) (dr.Key, dr.Key, dr.Key) {
	out := make([]byte, 96)
	_, _ = io.ReadFull(hkdf.New(sha256.New, dhOut, rk, []byte(k1RootInfo)), out) // 96 bytes cannot fail
	return dr.Key(out[0:32:32]), dr.Key(out[32:64:64]), dr.Key(out[64:96:96])
}

func (c k1Crypto) KdfCK(ck dr.Key) (dr.Key, dr.Key) {
	m := hmac.New(sha256.New, ck)
	m.Write([]byte{0x0f})
	next := m.Sum(nil)
	m.Reset()
	m.Write([]byte{0x10})
	return next, m.Sum(nil)
}

// k1Keys expands a message key: HKDF-SHA256(mk, 32 zero bytes of salt,
// k1MessageInfo) → encryption key ‖ authentication key ‖ IV.
func k1Keys(mk dr.Key) (enc, auth, iv []byte) {
	out := make([]byte, 80)
	_, _ = io.ReadFull(hkdf.New(sha256.New, mk, make([]byte, 32), []byte(k1MessageInfo)), out)
	return out[0:32], out[32:64], out[64:80]
}

func k1Tag(auth, ad, body []byte) []byte {
	m := hmac.New(sha256.New, auth)
	m.Write(ad)
	m.Write(body)
	return m.Sum(nil)
}

// Encrypt returns iv ‖ AES-256-CTR(pt) ‖ HMAC-SHA256(ad ‖ iv ‖ ct).
func (c k1Crypto) Encrypt(mk dr.Key, plaintext, ad []byte) ([]byte, error) {
	enc, auth, iv := k1Keys(mk)
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, err
	}
	out := make([]byte, aes.BlockSize+len(plaintext), aes.BlockSize+len(plaintext)+sha256.Size)
	copy(out, iv)
	cipher.NewCTR(block, iv).XORKeyStream(out[aes.BlockSize:], plaintext)
	return append(out, k1Tag(auth, ad, out)...), nil
}

// Decrypt checks the tag, then decrypts with the transmitted IV. Unlike
// status-go it rejects inputs too short to hold an IV and a tag.
func (c k1Crypto) Decrypt(mk dr.Key, ciphertext, ad []byte) ([]byte, error) {
	if len(ciphertext) < aes.BlockSize+sha256.Size {
		return nil, errors.New("peers: status: ciphertext too short")
	}
	enc, auth, _ := k1Keys(mk)
	body, tag := ciphertext[:len(ciphertext)-sha256.Size], ciphertext[len(ciphertext)-sha256.Size:]
	if !hmac.Equal(k1Tag(auth, ad, body), tag) {
		return nil, errors.New("peers: status: invalid MAC")
	}
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, err
	}
	pt := make([]byte, len(body)-aes.BlockSize)
	cipher.NewCTR(block, body[:aes.BlockSize]).XORKeyStream(pt, body[aes.BlockSize:])
	return pt, nil
}

// --- status-go's X3DH composition (status-compat.md §4.4, §5, §8).

type statusHandshaker struct {
	c statusConfig
	// A's identity, parsed once (status-go keeps it as *ecdsa.PrivateKey).
	ika *ecdsa.PrivateKey
	// B's identity and its signed prekey as status-go's bundles table keeps
	// it: the 32-byte scalar and the compressed public key.
	ikb              *ecdsa.PrivateKey
	spkPriv, spkPub  []byte
	spkParsed        *ecdsa.PrivateKey // used only by the lean variant
	bundleWire       []byte
	aIdentityWire    []byte // A's identity as the transport hands it to B
	bInstallationKey string
}

func newStatusHandshaker(c statusConfig) (Handshaker, error) {
	h := &statusHandshaker{c: c, bInstallationKey: installationB}
	var err error
	if h.ika, err = gethcrypto.GenerateKey(); err != nil {
		return nil, err
	}
	if h.ikb, err = gethcrypto.GenerateKey(); err != nil {
		return nil, err
	}
	spk, err := gethcrypto.GenerateKey()
	if err != nil {
		return nil, err
	}
	h.spkPriv, h.spkPub = gethcrypto.FromECDSA(spk), gethcrypto.CompressPubkey(&spk.PublicKey)
	if c.lean {
		h.spkParsed = spk
	}
	h.aIdentityWire = gethcrypto.CompressPubkey(&h.ika.PublicKey)

	// B's bundle, signed once (set-up, not measured). The format is
	// Status's (status-compat.md §4.3); ratchetd's signer makes it, and the
	// status-go-style verification below must accept it.
	ikbKP, err := keys.ParsePrivateKey(gethcrypto.FromECDSA(h.ikb))
	if err != nil {
		return nil, err
	}
	kp, err := ikbKP.KeyPair()
	if err != nil {
		return nil, err
	}
	spkKey, err := keys.ParsePublicKey(h.spkPub)
	if err != nil {
		return nil, err
	}
	v, err := bundle.Sign(kp, []bundle.Entry{{InstallationID: installationB, SignedPreKey: spkKey, Version: 1, ProtocolVersion: bundle.ProtocolVersion}}, time.Now().UnixNano())
	if err != nil {
		return nil, err
	}
	if h.bundleWire, err = proto.Marshal(v.Proto()); err != nil {
		return nil, err
	}
	return h, nil
}

// statusSignatureMaterial is status-compat.md §4.3: for each installation
// id in byte order, id ‖ SPK ‖ decimal version, then the decimal timestamp
// when non-zero.
func statusSignatureMaterial(b *messages.Bundle) []byte {
	ids := make([]string, 0, len(b.GetSignedPreKeys()))
	for id := range b.GetSignedPreKeys() {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []byte
	for _, id := range ids {
		spk := b.GetSignedPreKeys()[id]
		out = append(out, id...)
		out = append(out, spk.GetSignedPreKey()...)
		out = strconv.AppendUint(out, uint64(spk.GetVersion()), 10)
	}
	if ts := b.GetTimestamp(); ts != 0 {
		out = strconv.AppendInt(out, ts, 10)
	}
	return out
}

// statusVerifyBundle is status-compat.md §4.4: decompress the identity,
// recover the signer and compare addresses.
func statusVerifyBundle(b *messages.Bundle) error {
	id, err := gethcrypto.DecompressPubkey(b.GetIdentity())
	if err != nil {
		return err
	}
	signer, err := gethcrypto.SigToPub(gethcrypto.Keccak256(statusSignatureMaterial(b)), b.GetSignature())
	if err != nil {
		return err
	}
	if gethcrypto.PubkeyToAddress(*signer) != gethcrypto.PubkeyToAddress(*id) {
		return errors.New("peers: status: bundle signed by another key")
	}
	return nil
}

// statusSK is SK = Keccak256(dh1 ‖ dh2 ‖ dh3) (status-compat.md §5.1).
func statusSK(pairs ...dhArgs) ([]byte, error) {
	material := make([]byte, 0, 96)
	for i, p := range pairs {
		s, err := k1SharedParsed(p.priv, p.pub)
		if err != nil {
			return nil, fmt.Errorf("peers: status: dh%d: %w", i+1, err)
		}
		material = append(material, s...)
	}
	return gethcrypto.Keccak256(material), nil
}

// dhArgs is one DH of X3DH: our private key and their public key.
type dhArgs struct {
	priv *ecdsa.PrivateKey
	pub  *ecdsa.PublicKey
}

func (h *statusHandshaker) Handshake(payload []byte) ([]byte, error) {
	// --- A: verify B's bundle, active X3DH, session, first message.
	var bp messages.Bundle
	if err := proto.Unmarshal(h.bundleWire, &bp); err != nil {
		return nil, err
	}
	if err := statusVerifyBundle(&bp); err != nil {
		return nil, err
	}
	entry := bp.GetSignedPreKeys()[h.bInstallationKey]
	if entry == nil {
		return nil, errors.New("peers: status: no bundle entry")
	}
	spkBytes := entry.GetSignedPreKey()
	idPub, err := gethcrypto.DecompressPubkey(bp.GetIdentity())
	if err != nil {
		return nil, err
	}
	spkPub, err := gethcrypto.DecompressPubkey(spkBytes)
	if err != nil {
		return nil, err
	}
	ek, err := gethcrypto.GenerateKey()
	if err != nil {
		return nil, err
	}
	sk, err := statusSK(dhArgs{h.ika, spkPub}, dhArgs{ek, idPub}, dhArgs{ek, spkPub})
	if err != nil {
		return nil, err
	}
	a, err := h.c.newRemoteSession(sessionID(spkBytes, installationB), sk, spkBytes, &dr.KeysStorageInMemory{})
	if err != nil {
		return nil, err
	}
	m, err := a.RatchetEncrypt(payload, nil)
	if err != nil {
		return nil, err
	}
	wire, err := proto.Marshal(drMessage(m, spkBytes, &messages.X3DHHeader{Key: gethcrypto.CompressPubkey(&ek.PublicKey), Id: spkBytes}))
	if err != nil {
		return nil, err
	}

	// --- B: passive X3DH from the header, session from its SPK, decrypt.
	var msg messages.EncryptedMessageProtocol
	if err := proto.Unmarshal(wire, &msg); err != nil {
		return nil, err
	}
	x := msg.GetX3DhHeader()
	if !bytes.Equal(x.GetId(), h.spkPub) { // stands for the bundles-table lookup
		return nil, errors.New("peers: status: unknown signed prekey")
	}
	spk := h.spkParsed
	if spk == nil {
		// status-go loads the private SPK as bytes and parses it per X3DH.
		if spk, err = gethcrypto.ToECDSA(h.spkPriv); err != nil {
			return nil, err
		}
	}
	ekPub, err := gethcrypto.DecompressPubkey(x.GetKey())
	if err != nil {
		return nil, err
	}
	aPub, err := gethcrypto.DecompressPubkey(h.aIdentityWire)
	if err != nil {
		return nil, err
	}
	skB, err := statusSK(dhArgs{spk, aPub}, dhArgs{h.ikb, ekPub}, dhArgs{spk, ekPub})
	if err != nil {
		return nil, err
	}
	b, err := h.c.newSession(sessionID(x.GetId(), installationA), skB, k1Pair{priv: h.spkPriv, pub: h.spkPub, key: h.spkParsed}, &dr.KeysStorageInMemory{})
	if err != nil {
		return nil, err
	}
	return statusReceive(h.c, b, nil, &msg)
}
