package ratchetd_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/transport"
)

// TestPropertyRandomSchedule runs thousands of seeded random steps — send,
// deliver, drop, duplicate, reorder, restart an installation, restart the
// engine — across 3 identities with 3, 2 and 1 devices, and checks that
// every message is decrypted at most once by each device, exactly once by
// every targeted device unless one of its envelopes was dropped, that
// nothing panics, and that every session is still usable at the end (no
// state left half-updated).
func TestPropertyRandomSchedule(t *testing.T) {
	steps := 2000
	if testing.Short() {
		steps = 400
	}
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { propertyRun(t, seed, steps) })
	}
}

func propertyRun(t *testing.T, seed uint64, steps int) {
	w := newWorld(t, transport.Faults{Duplicate: 0.05, Reorder: 0.3, Seed: seed}, nil)
	r := rand.New(rand.NewPCG(seed, 42))
	var devices [][]*ratchetd.Account
	for _, n := range []int{3, 2, 1} {
		id := newIdentity(t)
		var devs []*ratchetd.Account
		for range n {
			devs = append(devs, addDevice(t, w, id))
		}
		if n > 1 {
			pairUp(t, w, devs...)
		}
		devices = append(devices, devs)
	}
	for i := range devices {
		for j := range devices {
			if i != j {
				introduce(t, devices[i][0], devices[j][0])
			}
		}
	}
	type sent struct {
		targets   []string
		maybeLost bool
	}
	sends := map[string]*sent{}
	byEnvelope := map[string]string{} // envelope signature -> label
	mark := w.tap.mark()
	record := func(label string) {
		w.tap.mu.Lock()
		for _, e := range w.tap.sent[mark:] {
			byEnvelope[string(e.Signature)] = label
		}
		mark = len(w.tap.sent)
		w.tap.mu.Unlock()
	}
	pick := func() (int, int) {
		i := r.IntN(len(devices))
		return i, r.IntN(len(devices[i]))
	}
	reload := func() {
		for i := range devices {
			for j := range devices[i] {
				devices[i][j] = w.reload(devices[i][j])
			}
		}
	}
	for step := range steps {
		switch op := r.IntN(20); {
		case op < 8: // send to another identity
			i, j := pick()
			k := (i + 1 + r.IntN(len(devices)-1)) % len(devices)
			label := fmt.Sprintf("p%d-%d", seed, step)
			rep, err := devices[i][j].Send(devices[k][0].Identity(), []byte(label))
			if err != nil {
				t.Fatalf("step %d: send: %v", step, err)
			}
			record(label)
			targets := rep.Installations
			if rep.DHFallback {
				// The "none" entry is for every installation of the peer.
				for _, d := range devices[k] {
					targets = append(targets, d.InstallationID())
				}
			}
			sends[label] = &sent{targets: targets}
		case op < 16: // deliver a few (in any order)
			w.mem.DeliverAll(1 + r.IntN(4))
		case op < 18: // drop one
			if env := w.mem.DropOne(); env != nil {
				if label, ok := byEnvelope[string(env.Signature)]; ok {
					sends[label].maybeLost = true
				}
			}
		case op == 18: // restart one installation from the store
			w.deliver()
			record("") // replies caused by deliveries carry no payload
			i, j := pick()
			id := devices[i][j].InstallationID()
			if err := w.eng.Actors().StopInstallation(id); err != nil {
				t.Fatal(err)
			}
			if _, err := w.eng.Actors().LoadInstallations(); err != nil {
				t.Fatal(err)
			}
		default: // restart the whole engine, rarely
			if r.IntN(4) == 0 {
				w.deliver()
				record("")
				w.restart(nil)
				reload()
			}
		}
	}
	w.deliver()
	got := map[string]map[string]int{} // label -> installation -> count
	for _, devs := range devices {
		for _, d := range devs {
			for _, m := range w.messages(d) {
				if got[string(m.Payload)] == nil {
					got[string(m.Payload)] = map[string]int{}
				}
				got[string(m.Payload)][d.InstallationID()]++
			}
		}
	}
	lost := 0
	for label, s := range sends {
		for _, target := range s.targets {
			n := got[label][target]
			if n > 1 {
				t.Fatalf("%s decrypted %d times by %s", label, n, target)
			}
			if n == 0 {
				if !s.maybeLost {
					t.Fatalf("%s never reached %s, and none of its envelopes was dropped", label, target)
				}
				lost++
			}
		}
		for inst := range got[label] {
			found := false
			for _, target := range s.targets {
				found = found || target == inst
			}
			if !found {
				t.Fatalf("%s reached %s, which it was not encrypted for (targets %v, sender of %v)", label, inst, s.targets, got[label])
			}
		}
	}
	st := w.eng.Stats()
	t.Logf("seed %d: %d sends, %d (message, device) pairs lost to drops; engine stats %+v", seed, len(sends), lost, st)
	// Every session still works: each device writes to each other identity.
	for i, devs := range devices {
		for _, d := range devs {
			for k := range devices {
				if k == i {
					continue
				}
				label := fmt.Sprintf("final-%s-%d", d.InstallationID(), k)
				rep, err := d.Send(devices[k][0].Identity(), []byte(label))
				if err != nil {
					t.Fatalf("final send: %v", err)
				}
				w.deliver()
				for _, target := range rep.Installations {
					if !containsPayload(w.messages(accountByID(devices, target)), label) {
						t.Fatalf("final message %s did not reach %s", label, target)
					}
				}
			}
		}
	}
}

func containsPayload(ms []ratchetd.Message, s string) bool {
	for _, m := range ms {
		if string(m.Payload) == s {
			return true
		}
	}
	return false
}

func accountByID(devices [][]*ratchetd.Account, id string) *ratchetd.Account {
	for _, devs := range devices {
		for _, d := range devs {
			if d.InstallationID() == id {
				return d
			}
		}
	}
	return nil
}
