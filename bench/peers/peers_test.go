package peers

import (
	"bytes"
	"crypto/rand"
	"testing"

	gethcrypto "github.com/ethereum/go-ethereum/crypto"
	dr "github.com/status-im/doubleratchet"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
)

// TestWorkloads carries a few messages of every workload through every
// implementation and checks each plaintext.
func TestWorkloads(t *testing.T) {
	pl := Payload()
	for _, im := range Impls() {
		t.Run(im.Name, func(t *testing.T) {
			p, err := im.NewPair()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 { // burst
				if err := send(p, 0, pl); err != nil {
					t.Fatalf("burst %d: %v", i, err)
				}
			}
			for i := range 6 { // ping-pong
				if err := send(p, i%2, pl); err != nil {
					t.Fatalf("pingpong %d: %v", i, err)
				}
			}
			if im.NewHandshaker == nil {
				return
			}
			h, err := im.NewHandshaker()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				got, err := h.Handshake(pl)
				if err != nil {
					t.Fatalf("x3dh %d: %v", i, err)
				}
				if !bytes.Equal(got, pl) {
					t.Fatalf("x3dh %d: wrong plaintext", i)
				}
			}
		})
	}
}

// TestRun runs the whole harness at a tiny size.
func TestRun(t *testing.T) {
	res, err := Run(Config{Rounds: 2, Burst: 3, PingPong: 3, X3DH: 1, Steady: false}, Impls(), Workloads())
	if err != nil {
		t.Fatal(err)
	}
	if want := len(Impls()) * len(Workloads()); len(res) != want {
		t.Fatalf("%d results, want %d", len(res), want)
	}
	for _, r := range res {
		if r.NA != "" {
			continue
		}
		if len(r.Samples) != 2 || r.MedianNs <= 0 || r.Ratio <= 0 {
			t.Errorf("%s/%s: incomplete result %+v", r.Impl, r.Workload, r)
		}
		if r.Workload == PingPong && r.Messages != 4 {
			t.Errorf("pingpong sample has %d messages, want 4 (rounded up to even)", r.Messages)
		}
	}
}

// storedKeys counts the message keys a status-im/doubleratchet store holds.
func storedKeys(t *testing.T, ks *dr.KeysStorageInMemory) int {
	t.Helper()
	all, err := ks.All()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range all {
		n += len(m)
	}
	return n
}

// TestStatusKeyRetention checks what the Status variants keep: every used
// key, up to MaxMessageKeysPerSession (2000), unless DeleteMk is called.
func TestStatusKeyRetention(t *testing.T) {
	pl := Payload()
	for v, want := range map[statusVariant]int{statusK1: 2000, statusK1Del: 0} {
		p, err := newStatusPair(v.config())
		if err != nil {
			t.Fatal(err)
		}
		sp := p.(*statusPair)
		for range 2100 {
			if err := send(p, 0, pl); err != nil {
				t.Fatal(err)
			}
		}
		if got := storedKeys(t, sp.keys[1]); got != want {
			t.Errorf("%s: receiver holds %d keys, want %d", sp.c.name, got, want)
		}
	}
}

// TestStatusStoreGrowsInPingPong documents why the retained-key variants
// have no steady state in pingpong: the library's in-memory store prunes
// keys but never the per-ratchet-key map entries they lived in (only DeleteMk
// removes an emptied entry), so with a new ratchet key per message its outer
// map grows by one entry per received message, and every decrypt scans it.
func TestStatusStoreGrowsInPingPong(t *testing.T) {
	pl := Payload()
	p, err := newStatusPair(statusK1.config())
	if err != nil {
		t.Fatal(err)
	}
	sp := p.(*statusPair)
	for i := range 2 * 2200 {
		if err := send(p, i%2, pl); err != nil {
			t.Fatal(err)
		}
	}
	all, err := sp.keys[1].All()
	if err != nil {
		t.Fatal(err)
	}
	if keys := storedKeys(t, sp.keys[1]); keys != 2000 {
		t.Errorf("B holds %d keys, want 2000", keys)
	}
	if len(all) <= 2200 {
		t.Errorf("B's store has %d ratchet-key entries, want more than 2200 (one per received message)", len(all))
	}
}

// TestK1CryptoInteropWithRatchetd runs sessions between ratchetd (A, the
// initiator) and status-im/doubleratchet with the secp256k1 crypto written
// here (B, the responder), both directions and across DH ratchet steps. If
// the two disagreed on a KDF, the AD or the cipher, a decrypt would fail.
// This validates the Status crypto measured here against ratchetd's, which
// is tested against Status's own vectors (crypto/vectors).
func TestK1CryptoInteropWithRatchetd(t *testing.T) {
	for _, v := range []statusVariant{statusK1, statusK1LeanDel} {
		c := v.config()
		t.Run(c.name, func(t *testing.T) { interop(t, c) })
	}
}

func interop(t *testing.T, c statusConfig) {
	ika, _ := keys.GenerateKey(rand.Reader)
	ikb, _ := keys.GenerateKey(rand.Reader)
	spk, _ := keys.GenerateKey(rand.Reader)
	ini, err := x3dh.Initiate(rand.Reader, ika.Private, ikb.Public, spk.Public)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), spk.Public, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := &ratchet.Session{State: st}
	// B's X3DH the status-go way: SK = Keccak(DH(SPK, IK_A) ‖ DH(IK_B, EK) ‖ DH(SPK, EK)).
	spkE, _ := gethcrypto.ToECDSA(spk.Private[:])
	ikbE, _ := gethcrypto.ToECDSA(ikb.Private[:])
	ikaPub, _ := gethcrypto.DecompressPubkey(ika.Public[:])
	ekPub, _ := gethcrypto.DecompressPubkey(ini.Ephemeral[:])
	skB, err := statusSK(dhArgs{spkE, ikaPub}, dhArgs{ikbE, ekPub}, dhArgs{spkE, ekPub})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(skB, ini.SK[:]) {
		t.Fatal("status-go-style X3DH and ratchetd's disagree")
	}
	pair := k1Pair{priv: dr.Key(spk.Private[:]), pub: dr.Key(spk.Public[:])}
	if c.lean {
		pair.key = spkE
	}
	b, err := c.newSession(sessionID(spk.Public[:], installationA), skB, pair, &dr.KeysStorageInMemory{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 9 {
		msg := []byte{byte(i), 1, 2, 3}
		if i%3 != 2 { // A → B twice in a row, then B → A
			h, ct, err := a.Encrypt(msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.RatchetDecrypt(dr.Message{Header: dr.MessageHeader{DH: dr.Key(h.DH[:]), N: h.N, PN: h.PN}, Ciphertext: ct}, nil)
			if err != nil {
				t.Fatalf("status decrypts ratchetd message %d: %v", i, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("message %d: wrong plaintext", i)
			}
			continue
		}
		m, err := b.RatchetEncrypt(msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		key, err := keys.ParsePublicKey(m.Header.DH)
		if err != nil {
			t.Fatal(err)
		}
		r, _, err := a.Decrypt(ratchet.Header{DH: key, N: m.Header.N, PN: m.Header.PN}, m.Ciphertext, rand.Reader)
		if err != nil {
			t.Fatalf("ratchetd decrypts status message %d: %v", i, err)
		}
		if !bytes.Equal(r.Plaintext, msg) {
			t.Fatalf("message %d: wrong plaintext", i)
		}
	}
}

// TestStatusBundleVerify checks the status-go-style bundle verification
// against ratchetd-signed bundles, and that it rejects a tampered one.
func TestStatusBundleVerify(t *testing.T) {
	h, err := newStatusHandshaker(statusK1.config())
	if err != nil {
		t.Fatal(err)
	}
	var b messages.Bundle
	if err := proto.Unmarshal(h.(*statusHandshaker).bundleWire, &b); err != nil {
		t.Fatal(err)
	}
	if err := statusVerifyBundle(&b); err != nil {
		t.Fatalf("valid bundle rejected: %v", err)
	}
	b.Timestamp++
	if err := statusVerifyBundle(&b); err == nil {
		t.Fatal("tampered bundle accepted")
	}
}
