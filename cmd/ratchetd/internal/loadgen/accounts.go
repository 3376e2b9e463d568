package loadgen

import (
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
)

// setupTimeout bounds each wait of the setup phase (pairing, first
// messages), which runs on the asynchronous transport.
const setupTimeout = 30 * time.Second

// introduce gives a the bundle of b, as a QR code would.
func introduce(a, b *ratchetd.Account) error {
	s, err := b.ExportBundle()
	if err != nil {
		return fmt.Errorf("export bundle: %w", err)
	}
	if err := a.ImportBundle(s); err != nil {
		return fmt.Errorf("import bundle: %w", err)
	}
	return nil
}

// devices creates n installations of one new identity.
func devices(eng *ratchetd.Engine, n int) ([]*ratchetd.Account, error) {
	id, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	out := make([]*ratchetd.Account, 0, n)
	for range n {
		a, err := eng.AddInstallation(id.Private)
		if err != nil {
			return nil, fmt.Errorf("add installation: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

// pair makes the installations of one identity know and approve each other
// (pairing needs an explicit approval, status-compat.md §9), so that each
// sends copies to the others and lists them in its bundle.
func pair(devs []*ratchetd.Account) error {
	if len(devs) < 2 {
		return nil
	}
	for _, d := range devs {
		if err := d.AnnounceDevice(); err != nil {
			return fmt.Errorf("announce device: %w", err)
		}
	}
	for _, d := range devs {
		for _, o := range devs {
			if d == o {
				continue
			}
			if err := waitKnown(d, o); err != nil {
				return err
			}
			if err := d.ApproveDevice(d.Identity(), o.InstallationID()); err != nil {
				return fmt.Errorf("approve device: %w", err)
			}
		}
	}
	return nil
}

// waitKnown waits until d has received o's announcement.
func waitKnown(d, o *ratchetd.Account) error {
	deadline := time.Now().Add(setupTimeout)
	for {
		list, err := d.Devices(d.Identity())
		if err != nil {
			return fmt.Errorf("devices: %w", err)
		}
		for _, x := range list {
			if x.InstallationID == o.InstallationID() {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("installation %s never learnt of %s", d.InstallationID(), o.InstallationID())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// parallel runs f(0..n-1) on a few workers and returns the first error.
// Setup is concurrent so that the engine's group commit batches it.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// setupWorkers is the concurrency of setup phases.
const setupWorkers = 8

// handshake makes a and b a confirmed conversation: a (who knows b's
// bundle) runs X3DH, b answers, and each waits for the other's message, so
// the measured phase starts with no X3DH header left to repeat.
func handshake(a, b *ratchetd.Account, aGot, bGot signal) error {
	if err := introduce(a, b); err != nil {
		return err
	}
	if _, err := a.Send(b.Identity(), []byte("hello")); err != nil {
		return fmt.Errorf("first message: %w", err)
	}
	if err := bGot.wait(nil, setupTimeout); err != nil {
		return fmt.Errorf("first message: %w", err)
	}
	if _, err := b.Send(a.Identity(), []byte("hello back")); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	if err := aGot.wait(nil, setupTimeout); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	return nil
}
