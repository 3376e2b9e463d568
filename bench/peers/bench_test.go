package peers

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/messages"
)

// The Go benchmarks run the same operations as cmd/peers, one b.N loop per
// implementation (not interleaved, and without the steady-state warm-up of
// key-retaining stores: use cmd/peers for the comparison). One op is one
// message, or one new session for X3DH.
//
//	go test -run '^$' -bench . -benchmem ./peers

func BenchmarkBurst(b *testing.B) {
	pl := Payload()
	for _, im := range Impls() {
		b.Run(im.Name, func(b *testing.B) {
			p, err := im.NewPair()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := send(p, 0, pl); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPingPong(b *testing.B) {
	pl := Payload()
	for _, im := range Impls() {
		b.Run(im.Name, func(b *testing.B) {
			p, err := im.NewPair()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := send(p, i%2, pl); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkX3DH(b *testing.B) {
	pl := Payload()
	for _, im := range Impls() {
		if im.NewHandshaker == nil {
			continue
		}
		b.Run(im.Name, func(b *testing.B) {
			h, err := im.NewHandshaker()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				got, err := h.Handshake(pl)
				if err != nil {
					b.Fatal(err)
				}
				if err := checkPlaintext(got, pl); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRatchetdParseHeader is the wire-decoding share of a ratchetd
// burst message: protobuf Unmarshal and ParseHeader, which validates the
// ratchet key and the bundle id (a point decompression each the first time
// crypto/keys sees a key; later from its cache of validated keys).
func BenchmarkRatchetdParseHeader(b *testing.B) {
	p, err := newRatchetdPair()
	if err != nil {
		b.Fatal(err)
	}
	rp := p.(*ratchetdPair)
	h, ct, err := rp.s[0].Encrypt(Payload())
	if err != nil {
		b.Fatal(err)
	}
	wire, err := proto.Marshal(&messages.EncryptedMessageProtocol{DrHeader: h.Proto(rp.bundleID), Payload: ct})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var m messages.EncryptedMessageProtocol
		if err := proto.Unmarshal(wire, &m); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ratchet.ParseHeader(m.GetDrHeader()); err != nil {
			b.Fatal(err)
		}
	}
}
