package transport

import (
	"runtime"
	"testing"
	"weak"
)

// A cancelled subscription, and what its handler holds (the engine's
// gateway holds the receiving actor), become unreachable: the topic's
// emptied list used to keep them for the life of the transport.
func TestCancelledSubscriptionIsFreed(t *testing.T) {
	for _, manual := range []bool{false, true} {
		m := NewMemory(MemoryOptions{Manual: manual})
		type receiver struct{ state [1024]byte }
		var refs []weak.Pointer[receiver]
		for i := range 20 {
			r := &receiver{}
			r.state[0] = byte(i)
			refs = append(refs, weak.Make(r))
			cancel, err := m.Subscribe("topic", func(Delivery) error { _ = r.state[0]; return nil })
			if err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		runtime.GC()
		runtime.GC()
		for i, w := range refs {
			if w.Value() != nil {
				t.Errorf("manual=%v: subscription %d still reachable after cancel", manual, i)
			}
		}
		m.mu.Lock()
		n := len(m.subs)
		m.mu.Unlock()
		if n != 0 {
			t.Errorf("manual=%v: %d topics left with no subscriber", manual, n)
		}
		m.Close()
	}
}

// Cancelling a subscription after the transport was closed (an engine that
// shares a transport closed first, or StopInstallation after it) does not
// panic: Close sets m.subs to nil (from the review of the unsubscribe fix).
func TestCancelAfterClose(t *testing.T) {
	for _, manual := range []bool{false, true} {
		m := NewMemory(MemoryOptions{Manual: manual})
		cancel, err := m.Subscribe("topic", func(Delivery) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("manual=%v: cancel after Close panicked: %v", manual, r)
				}
			}()
			cancel()
		}()
	}
}
