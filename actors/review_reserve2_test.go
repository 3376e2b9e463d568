package actors

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestReviewReserve2ResponderCrash (a check): b's session is made by
// decryptFresh (its reservation sized with used 0 on the fresh chain), b
// sends a run, is killed (store copied, no rewind), and sends again: a
// decrypts every message b reported sent, each once, in order.
func TestReviewReserve2ResponderCrash(t *testing.T) {
	c := newCrashPair(t, Config{BundleResignInterval: time.Hour})
	defer c.close()
	p, tr, received := c.reviewPair, c.tr, c.received
	a, aID, b, bID := p.a, p.aID, p.b, p.bID
	wait := func(id, text string) {
		tr.DeliverAll(0)
		for deadline := time.Now().Add(2 * time.Second); !slices.Contains(received(id), text) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	p.send(t, a, bID, "hello")
	wait(b, "hello")
	var want []string
	for i := range 5 {
		want = append(want, fmt.Sprint("b", i))
		p.send(t, b, aID, want[i])
	}
	wait(a, "b4")
	c.crash(t)
	for i := range 3 {
		want = append(want, fmt.Sprint("after ", i))
		p.send(t, b, aID, want[len(want)-1])
	}
	wait(a, "after 2")
	time.Sleep(50 * time.Millisecond)
	for _, w := range want {
		if !slices.Contains(received(a), w) {
			t.Fatalf("a never got %q; a got %q", w, received(a))
		}
	}
}
