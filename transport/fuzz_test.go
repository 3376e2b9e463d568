package transport_test

import (
	"crypto/rand"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// FuzzOpen: any bytes, decoded as an envelope and opened, never panic; an
// envelope that opens names the sender that signed it.
func FuzzOpen(f *testing.F) {
	kp, _ := keys.GenerateKey(rand.Reader)
	rcpt, _ := keys.GenerateKey(rand.Reader)
	for _, payload := range [][]byte{nil, []byte("x"), make([]byte, 300)} {
		env, _ := transport.Seal(kp.Private, "contact-discovery-1", &rcpt.Public, payload)
		b, _ := proto.Marshal(env)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var env messages.Envelope
		if proto.Unmarshal(b, &env) != nil {
			return
		}
		d, err := transport.Open(&env, 1024)
		if err != nil {
			return
		}
		if d.Sender != keys.PublicKey(env.Sender) {
			t.Fatalf("opened with sender %s, envelope names %x", d.Sender, env.Sender)
		}
	})
}
