package main

import (
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// tap records what the engine publishes: the ProtocolMessages, to print
// their headers, and which logical message each envelope carried, to name
// what the network lost.
type tap struct {
	transport.Transport
	mu      sync.Mutex
	current string
	labels  map[string]string // envelope signature → label
	sent    []*messages.ProtocolMessage
}

func (t *tap) Publish(env *messages.Envelope) error {
	var pm messages.ProtocolMessage
	ok := proto.Unmarshal(env.Payload, &pm) == nil
	t.mu.Lock()
	if t.current != "" {
		t.labels[string(env.Signature)] = t.current
	}
	if ok && len(pm.EncryptedMessage) > 0 {
		t.sent = append(t.sent, &pm)
	}
	t.mu.Unlock()
	return t.Transport.Publish(env)
}

func (t *tap) setLabel(l string) {
	t.mu.Lock()
	t.current = l
	t.mu.Unlock()
}

func (t *tap) label(env *messages.Envelope) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.labels[string(env.Signature)]
}

func (t *tap) mark() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sent)
}

func (t *tap) since(mark int) []*messages.ProtocolMessage {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*messages.ProtocolMessage(nil), t.sent[mark:]...)
}
