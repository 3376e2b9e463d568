package transport_test

import (
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

func key(t *testing.T) keys.KeyPair {
	k, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	a, b := key(t), key(t)
	env, err := transport.Seal(a.Private, "topic", &b.Public, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := transport.Open(env, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Sender != a.Public || d.Recipient != b.Public || string(d.Payload) != "payload" {
		t.Fatalf("delivery %+v", d)
	}
	// Any change breaks the signature, or the envelope.
	for name, mutate := range map[string]func(*messages.Envelope){
		"payload":   func(e *messages.Envelope) { e.Payload = []byte("payloaD") },
		"topic":     func(e *messages.Envelope) { e.Topic = "other" },
		"recipient": func(e *messages.Envelope) { e.Recipient = a.Public[:] },
		"no recip":  func(e *messages.Envelope) { e.Recipient = nil },
		"sender":    func(e *messages.Envelope) { e.Sender = b.Public[:] },
		"no sender": func(e *messages.Envelope) { e.Sender = nil },
		"signature": func(e *messages.Envelope) { e.Signature[3] ^= 1 },
		"short sig": func(e *messages.Envelope) { e.Signature = e.Signature[:64] },
		"empty":     func(e *messages.Envelope) { e.Topic = "" },
		"bad recip": func(e *messages.Envelope) { e.Recipient = []byte{2, 3} },
	} {
		e := proto.Clone(env).(*messages.Envelope)
		mutate(e)
		d, err := transport.Open(e, 0)
		if err == nil && d.Sender == a.Public {
			t.Errorf("%s: altered envelope accepted as from the sender", name)
		}
		if err != nil && !errors.Is(err, transport.ErrBadEnvelope) && !errors.Is(err, transport.ErrForged) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	big, _ := transport.Seal(a.Private, "t", nil, make([]byte, 11))
	if _, err := transport.Open(big, 10); !errors.Is(err, transport.ErrBadEnvelope) {
		t.Errorf("oversized payload: %v", err)
	}
}

func TestTopics(t *testing.T) {
	a := key(t)
	u, _ := a.Public.Uncompressed()
	if got := transport.ContactCodeTopic(a.Public); len(got) != 2+130+len("-contact-code") || got[:4] != "0x04" {
		t.Fatalf("contact code topic %q (uncompressed %x)", got, u[:2])
	}
	if got := transport.PartitionedTopic(a.Public); len(got) < len("contact-discovery-0") {
		t.Fatalf("partitioned topic %q", got)
	}
}

// TestMemoryFaultsReproducible: the same seed gives the same schedule.
func TestMemoryFaultsReproducible(t *testing.T) {
	run := func() []string {
		m := transport.NewMemory(transport.MemoryOptions{Manual: true, Faults: transport.Faults{Loss: 0.2, Duplicate: 0.2, Reorder: 0.5, Seed: 7}})
		defer m.Close()
		var got []string
		m.Subscribe("t", func(d transport.Delivery) error { got = append(got, string(d.Payload)); return nil })
		a := key(t)
		for i := range 50 {
			env, _ := transport.Seal(a.Private, "t", nil, []byte{byte('A' + i%26), byte('0' + i/26)})
			m.Publish(env)
		}
		m.DeliverAll(0)
		return got
	}
	x, y := run(), run()
	if len(x) == 0 || len(x) == 50 {
		t.Fatalf("faults had no effect: %d deliveries", len(x))
	}
	if len(x) != len(y) {
		t.Fatalf("not reproducible: %d vs %d", len(x), len(y))
	}
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("not reproducible at %d", i)
		}
	}
}

func TestMemoryAsync(t *testing.T) {
	m := transport.NewMemory(transport.MemoryOptions{})
	defer m.Close()
	var mu sync.Mutex
	got := 0
	forged := 0
	done := make(chan struct{})
	a := key(t)
	m.Subscribe("t", func(d transport.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if string(d.Payload) == "y" {
			if d.Sender == a.Public {
				forged++
			}
			return nil
		}
		got++
		if got == 100 {
			close(done)
		}
		return nil
	})
	for range 100 {
		env, _ := transport.Seal(a.Private, "t", nil, []byte("x"))
		if err := m.Publish(env); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("not all delivered")
	}
	// An altered envelope is refused: the signer it recovers is not the
	// sender it names.
	env, _ := transport.Seal(a.Private, "t", nil, []byte("x"))
	env.Payload = []byte("y")
	m.Publish(env)
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if forged != 0 || m.Stats().Rejected != 1 {
		t.Fatalf("altered envelope: %d delivered as the signer's, %d rejected", forged, m.Stats().Rejected)
	}
}

// An async subscription verifies signatures in parallel but calls its
// handler in arrival order: the next call begins once the previous one
// called Delivery.Taken (up to Concurrency in flight) or returned. Called
// in parallel, three in four of a burst's messages reached the receiver out
// of order.
func TestMemoryAsyncInOrder(t *testing.T) {
	const n, inFlight = 300, 8
	m := transport.NewMemory(transport.MemoryOptions{Concurrency: inFlight})
	defer m.Close()
	a := key(t)

	// A handler that calls Taken: called in order, and inFlight of them
	// wait together (each waits for the next inFlight-1 to begin).
	var mu sync.Mutex
	var order []int
	begun := make([]chan struct{}, n)
	for i := range begun {
		begun[i] = make(chan struct{})
	}
	done := make(chan struct{})
	m.Subscribe("taken", func(d transport.Delivery) error {
		i := int(d.Payload[0])<<8 | int(d.Payload[1])
		mu.Lock()
		order = append(order, i)
		if len(order) == n {
			close(done)
		}
		mu.Unlock()
		close(begun[i])
		d.Taken()
		if j := min(i+inFlight-1, n-1); j > i {
			select {
			case <-begun[j]:
			case <-time.After(5 * time.Second):
				t.Errorf("delivery %d waited in vain for %d to begin", i, j)
			}
		}
		return nil
	})
	// A handler that does not: its calls never overlap.
	var active, maxActive, calls atomic.Int32
	plainDone := make(chan struct{})
	m.Subscribe("plain", func(d transport.Delivery) error {
		if v := active.Add(1); v > maxActive.Load() {
			maxActive.Store(v)
		}
		time.Sleep(100 * time.Microsecond)
		active.Add(-1)
		if calls.Add(1) == 50 {
			close(plainDone)
		}
		return nil
	})
	for i := range n {
		env, _ := transport.Seal(a.Private, "taken", nil, []byte{byte(i >> 8), byte(i)})
		if err := m.Publish(env); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			// Bytes that are no envelope wait for their turn too.
			m.Inject("taken", []byte{0xff, 0xff, 0xff})
			m.Inject("plain", []byte{0xff, 0xff, 0xff})
		}
		if i < 50 {
			env, _ := transport.Seal(a.Private, "plain", nil, []byte("p"))
			if err := m.Publish(env); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []chan struct{}{done, plainDone} {
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatal("not all delivered")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range order {
		if v != i {
			t.Fatalf("delivery %d was message %d: out of order (%v…)", i, v, order[:min(len(order), i+5)])
		}
	}
	if maxActive.Load() != 1 {
		t.Fatalf("a handler that never calls Taken ran %d calls at once, want 1", maxActive.Load())
	}
}
