package actors

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// TestReviewReserve2ResponderCrash (a check): b's session is made by
// decryptFresh (its reservation sized with used 0 on the fresh chain), b
// sends a run, is killed (store copied, no rewind), and sends again: a
// decrypts every message b reported sent, each once, in order.
func TestReviewReserve2ResponderCrash(t *testing.T) {
	cfg := Config{BundleResignInterval: time.Hour}
	var mu sync.Mutex
	got := map[string][]string{}
	handler := func(m Message) {
		mu.Lock()
		got[m.RecipientInstallation] = append(got[m.RecipientInstallation], string(m.Payload))
		mu.Unlock()
	}
	received := func(id string) []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got[id])
	}
	tr := transport.NewMemory(transport.MemoryOptions{Manual: true})
	defer tr.Close()
	var store persistence.Store = persistence.NewMemory()
	e := NewEngine(cfg, store, tr, handler)
	defer func() { e.Close() }()
	a, aID, err := e.CreateInstallation(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, bID, err := e.CreateInstallation(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &reviewPair{e: e, tr: tr, a: a, b: b, aID: aID, bID: bID}
	br, _ := p.request(t, b, &messages.BundleRequest{NowUnixNano: time.Now().UnixNano()}).(*messages.BundleReply)
	p.request(t, a, &messages.ImportBundle{Bundle: br.Bundle})
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
	img := reviewCrashCopy(t, store)
	e.Close()
	store = img
	e = NewEngine(cfg, store, tr, handler)
	p.e = e
	if _, err := e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
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
