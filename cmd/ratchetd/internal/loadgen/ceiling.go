package loadgen

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// primitive is the crypto-only work one delivered message of a scenario
// corresponds to: encrypt, the protobuf wire round trip, the transport
// envelope's signature and its recovery (the engine signs every envelope, as
// Status's transport does), decrypt; for a new session also the verification
// of the peer's bundle — with no actors and no persistence. The engine's rate
// as a fraction of it is what those cost.
type primitive int

const (
	symmetric   primitive = iota // the same sender again: a chain-key step each side
	alternating                  // the sender alternates: a DH ratchet step per message
	newSession                   // a new account, X3DH both sides, both initial states, the first message
)

func (p primitive) String() string {
	switch p {
	case symmetric:
		return "ratchet encrypt+decrypt, same direction"
	case alternating:
		return "ratchet encrypt+decrypt, alternating (DH step)"
	case newSession:
		return "new account (its bundle signed and published), x3dh initiate+passive, first ratchet message"
	}
	return fmt.Sprintf("primitive(%d)", int(p))
}

// Ceiling is the crypto-only rate measured in the same run.
type Ceiling struct {
	Primitive  string
	MsgsPerSec float64
	Cores      int // goroutines that ran the loop (one session pair each)
	Messages   int64
	// Runs are the rates of the measurements combined into MsgsPerSec
	// (before and after the engine's run).
	Runs []float64
	// CPUs is the process's CPU time over the measurement's wall time:
	// how many CPUs the loops kept busy (up to Cores; 0 where the CPU
	// time is unknown). Well under Cores, the ceiling measured the
	// machine's other load or the scheduler, not the cryptography.
	CPUs float64
}

// combineCeilings is the mean rate of two equally long measurements.
func combineCeilings(a, b Ceiling) Ceiling {
	c := a
	c.Messages = a.Messages + b.Messages
	c.MsgsPerSec = (a.MsgsPerSec + b.MsgsPerSec) / 2
	c.Runs = []float64{a.MsgsPerSec, b.MsgsPerSec}
	c.CPUs = (a.CPUs + b.CPUs) / 2
	return c
}

// measureCeiling runs the loop of p on cores goroutines for about d, each
// locked to its own thread.
//
// The lock is what makes it the cryptography's rate and not the Go
// scheduler's. On this machine's two cores, unlocked loops kept only
// 1.76–1.82 CPUs busy (perf stat), locked ones 1.95, and the unlocked ones
// made 7–11 % fewer messages: 7 470–8 010 against 8 550–8 640 alternating
// messages/s, 19 700–20 300 against 22 100–22 400 same-direction, 2 060
// against 2 190–2 210 new sessions, at the same CPU time per message. Our
// reading, not traced further: every scalar multiplication, recovery and
// signature is a cgo call of 25–45 µs, longer than a sysmon tick, so the
// runtime takes the caller's P and hands it on; an unlocked goroutine that
// finds no P when its call returns waits for one in the run queue, and a
// core idles meanwhile. The engine's actors cannot lock threads (they are
// many goroutines, each briefly on a worker), so that loss is the
// engine's to bear, not the ceiling's.
func measureCeiling(p primitive, payload, cores int, d time.Duration) (Ceiling, error) {
	cores = max(cores, 1)
	pt := make([]byte, payload)
	var wg sync.WaitGroup
	counts := make([]int64, cores)
	errs := make([]error, cores)
	cpu0, start := cpuTime(), time.Now()
	for g := range cores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			counts[g], errs[g] = loop(p, pt, d)
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	var total int64
	for g := range cores {
		if errs[g] != nil {
			return Ceiling{}, errs[g]
		}
		total += counts[g]
	}
	c := Ceiling{Primitive: p.String(), MsgsPerSec: float64(total) / elapsed.Seconds(), Cores: cores, Messages: total}
	if cpu > 0 {
		c.CPUs = cpu.Seconds() / elapsed.Seconds()
	}
	return c, nil
}

// loop runs the primitive until d has passed (at least a few times).
func loop(p primitive, pt []byte, d time.Duration) (int64, error) {
	w, err := newCryptoPair()
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(d)
	var n int64
	for n < 8 || time.Now().Before(deadline) {
		switch p {
		case symmetric:
			err = w.message(w.alice, w.bob, pt)
		case alternating:
			if n%2 == 0 {
				err = w.message(w.alice, w.bob, pt)
			} else {
				err = w.message(w.bob, w.alice, pt)
			}
		case newSession:
			err = w.session(pt)
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// cryptoPair is two parties with a confirmed session, as in the engine
// after a handshake.
type cryptoPair struct {
	aliceID, bobID keys.KeyPair
	bobSPK         keys.KeyPair
	bobBundle      *messages.Bundle
	alice, bob     *ratchet.Session
}

func newCryptoPair() (*cryptoPair, error) {
	w := &cryptoPair{}
	var err error
	for _, k := range []*keys.KeyPair{&w.aliceID, &w.bobID, &w.bobSPK} {
		if *k, err = keys.GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
	}
	a, b, err := w.initiate([]byte("hello"))
	if err != nil {
		return nil, err
	}
	w.alice, w.bob = a, b
	// Bob answers once: both sides now have a sending chain.
	if err := w.message(w.bob, w.alice, []byte("hello back")); err != nil {
		return nil, err
	}
	return w, nil
}

// message encrypts on one side, passes the entry through the wire format
// and decrypts it on the other.
func (w *cryptoPair) message(from, to *ratchet.Session, pt []byte) error {
	h, ct, err := from.Encrypt(pt)
	if err != nil {
		return err
	}
	raw, err := proto.Marshal(&messages.ProtocolMessage{
		InstallationId:   "ceiling",
		EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{"peer": {DrHeader: h.Proto(w.bobSPK.Public), Payload: ct}},
	})
	if err != nil {
		return err
	}
	if raw, err = w.envelope(raw); err != nil {
		return err
	}
	var pm messages.ProtocolMessage
	if err := proto.Unmarshal(raw, &pm); err != nil {
		return err
	}
	e := pm.EncryptedMessage["peer"]
	rh, _, err := ratchet.ParseHeader(e.DrHeader)
	if err != nil {
		return err
	}
	_, _, err = to.Decrypt(rh, e.Payload, rand.Reader)
	return err
}

// envelope wraps wire bytes in a signed transport envelope and opens it
// again, recovering the sender, as the engine does for every message.
func (w *cryptoPair) envelope(raw []byte) ([]byte, error) {
	env, err := transport.SealWith(w.aliceID, "ceiling", &w.bobID.Public, raw)
	if err != nil {
		return nil, err
	}
	d, err := transport.Open(env, 0)
	if err != nil {
		return nil, err
	}
	return d.Payload, nil
}

// session is a whole new session as the x3dh scenario makes it: a fresh
// initiator account (identity key, signed prekey, its bundle signed and
// published on its contact-code topic), X3DH
// on both sides and the first message, whose attached bundle the responder
// verifies.
func (w *cryptoPair) session(pt []byte) error {
	id, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	spk, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	own, err := bundle.Sign(id, []bundle.Entry{{InstallationID: "fresh", SignedPreKey: spk.Public, Version: 1, ProtocolVersion: 1}}, time.Now().UnixNano())
	if err != nil {
		return err
	}
	// The new installation publishes its bundle on its contact-code topic,
	// as the engine's BundlePublisher does when it starts
	// (status-compat.md §4.5): one more signed envelope, nobody opens it.
	raw, err := proto.Marshal(&messages.ProtocolMessage{InstallationId: "fresh", Bundles: []*messages.Bundle{own.Proto()}})
	if err != nil {
		return err
	}
	if _, err := transport.SealWith(id, transport.ContactCodeTopic(id.Public), nil, raw); err != nil {
		return err
	}
	w.aliceID = id
	if _, _, err := w.initiate(pt); err != nil {
		return err
	}
	_, err = bundle.Verify(own.Proto())
	return err
}

func (w *cryptoPair) initiate(pt []byte) (alice, bob *ratchet.Session, err error) {
	// The initiator verifies the responder's bundle before using it.
	if w.bobBundle == nil {
		b, err := bundle.Sign(w.bobID, []bundle.Entry{{InstallationID: "peer", SignedPreKey: w.bobSPK.Public, Version: 1, ProtocolVersion: 1}}, time.Now().UnixNano())
		if err != nil {
			return nil, nil, err
		}
		w.bobBundle = b.Proto()
	}
	if _, err := bundle.Verify(w.bobBundle); err != nil {
		return nil, nil, err
	}
	ini, err := x3dh.Initiate(rand.Reader, w.aliceID.Private, w.bobID.Public, w.bobSPK.Public)
	if err != nil {
		return nil, nil, err
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), w.bobSPK.Public, rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	alice = &ratchet.Session{State: st}
	h, ct, err := alice.Encrypt(pt)
	if err != nil {
		return nil, nil, err
	}
	raw, err := proto.Marshal(&messages.ProtocolMessage{
		InstallationId: "ceiling",
		EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{"peer": {
			X3DhHeader: &messages.X3DHHeader{Key: ini.Ephemeral[:], Id: w.bobSPK.Public[:]},
			DrHeader:   h.Proto(w.bobSPK.Public),
			Payload:    ct,
		}},
	})
	if err != nil {
		return nil, nil, err
	}
	if raw, err = w.envelope(raw); err != nil {
		return nil, nil, err
	}
	var pm messages.ProtocolMessage
	if err := proto.Unmarshal(raw, &pm); err != nil {
		return nil, nil, err
	}
	e := pm.EncryptedMessage["peer"]
	ek, err := keys.ParsePublicKey(e.X3DhHeader.Key)
	if err != nil {
		return nil, nil, err
	}
	sk, err := x3dh.Passive(w.bobID.Private, w.bobSPK.Private, w.aliceID.Public, ek)
	if err != nil {
		return nil, nil, err
	}
	bob = &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), w.bobSPK)}
	rh, _, err := ratchet.ParseHeader(e.DrHeader)
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := bob.Decrypt(rh, e.Payload, rand.Reader); err != nil {
		return nil, nil, err
	}
	return alice, bob, nil
}
