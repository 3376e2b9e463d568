package actors

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/persistence"
	"github.com/ratchetd/ratchetd/transport"
)

// A BundlePublisher restarted after a failure starts from the paired
// devices the installation last gave it, not from those of the
// installation's start: a device unpaired since then is not advertised
// again (from the review of the publisher's start-up list).
func TestRestartedPublisherUsesCurrentPairedDevices(t *testing.T) {
	store := persistence.NewMemory()
	idk, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	open := func() (*Engine, func()) {
		tr := transport.NewMemory(transport.MemoryOptions{})
		e := NewEngine(Config{}, store, tr, func(Message) {})
		return e, func() { e.Close(); tr.Close() }
	}
	ask := func(e *Engine, id string, msg any) any {
		t.Helper()
		res, err := e.Request(id, msg)
		if err != nil {
			t.Fatal(err)
		}
		if ack, ok := res.(*messages.Ack); ok && ack.Error != messages.ErrorCode_OK {
			t.Fatalf("%T: %v %s", msg, ack.Error, ack.Detail)
		}
		return res
	}
	bundleOf := func(e *Engine, id string) *messages.Bundle {
		t.Helper()
		r, _ := ask(e, id, &messages.BundleRequest{NowUnixNano: time.Now().UnixNano()}).(*messages.BundleReply)
		if r == nil || r.Bundle == nil {
			t.Fatal("no bundle")
		}
		return r.Bundle
	}

	// Two devices of one identity; a approves b.
	e, closeEngine := open()
	a, _, err := e.CreateInstallation(&idk.Private)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := e.CreateInstallation(&idk.Private)
	if err != nil {
		t.Fatal(err)
	}
	ask(e, a, &messages.ImportBundle{Bundle: bundleOf(e, b)})
	ask(e, a, &messages.SetDeviceEnabled{Identity: idk.Public[:], InstallationId: b, Enabled: true})
	if _, ok := bundleOf(e, a).SignedPreKeys[b]; !ok {
		t.Fatal("the approved device is not in the bundle")
	}
	closeEngine()

	// a starts again with b paired, then b is unpaired.
	e, closeEngine = open()
	defer closeEngine()
	if _, err := e.LoadInstallations(); err != nil {
		t.Fatal(err)
	}
	ask(e, a, &messages.SetDeviceEnabled{Identity: idk.Public[:], InstallationId: b, Enabled: false})
	if _, ok := bundleOf(e, a).SignedPreKeys[b]; ok {
		t.Fatal("the unpaired device is still in the bundle")
	}

	// The publisher fails and is restarted by the installation.
	h, err := e.get(a)
	if err != nil {
		t.Fatal(err)
	}
	var pub *actor.PID
	prefix := h.pid.Id + "/"
	for _, shard := range e.system.ProcessRegistry.LocalPIDs.LocalPIDs {
		for id := range shard.Items() {
			if strings.HasPrefix(id, prefix) && !strings.Contains(id[len(prefix):], "/") {
				if pub != nil {
					t.Fatalf("two children of the installation: %s, %s", pub.Id, id)
				}
				pub = actor.NewPID(h.pid.Address, id)
			}
		}
	}
	if pub == nil {
		t.Fatal("publisher not found")
	}
	p, _ := e.system.ProcessRegistry.Get(pub)
	p.SendSystemMessage(pub, &actor.Restart{}) // what its supervisor does after a panic
	if _, ok := bundleOf(e, a).SignedPreKeys[b]; ok {
		t.Fatal("the restarted publisher advertises the unpaired device again")
	}
}
