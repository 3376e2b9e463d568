package ratchetd_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// BenchmarkSessionsOnDisk measures the resident memory of an engine that
// holds RATCHETD_SESSIONS conversations in Badger (1 000 000 for the
// command issue's goal) of which RATCHETD_ACTIVE (100 000) are active at
// once, in memory, as PeerSession actors. First an engine with a 2 s idle
// timeout takes SESSIONS − ACTIVE first contacts (each a real X3DH message
// with a bundle, from a new identity), committed and passivated as they
// come. Then it is closed and reopened on the same directory with a 1 h
// idle timeout and takes ACTIVE more, which all stay in memory. With every
// one received, it reports the resident memory (also its high-water mark),
// the active sessions the engine counts and the size of the directory.
// `make sessions-disk` runs it with the goal's figures.
//
// The simulated peers run in the same process (their garbage is collected;
// they keep nothing).
//
// RATCHETD_PHASE1=DIR keeps phase 1's directory in DIR, or, if DIR holds
// one, starts from a copy of it; with RATCHETD_PHASE1_ONLY the run stops
// once it is kept. `make sessions-disk` builds phase 1 once that way and
// runs phase 2 in a fresh process (inside a 1 GiB memory cgroup where one
// can be made), so that its memory is the engine's holding the
// conversations, not what the loading left behind.
func BenchmarkSessionsOnDisk(b *testing.B) {
	total, active := 20000, 2000
	if v, err := strconv.Atoi(os.Getenv("RATCHETD_SESSIONS")); err == nil && v > 0 {
		total = v
	}
	if v, err := strconv.Atoi(os.Getenv("RATCHETD_ACTIVE")); err == nil && v > 0 {
		active = v
	}
	if active > total {
		b.Fatalf("RATCHETD_ACTIVE %d > RATCHETD_SESSIONS %d", active, total)
	}
	for range b.N {
		sessionsOnDisk(b, total, active)
	}
}

func sessionsOnDisk(b *testing.B, total, active int) {
	dir := b.TempDir()
	if d := os.Getenv("RATCHETD_DIR"); d != "" {
		dir = d
	}
	base := rss()
	var received atomic.Int64
	open := func(idle time.Duration, mem *transport.Memory) *ratchetd.Engine {
		eng, err := ratchetd.Open(ratchetd.Options{
			Dir: dir, Transport: mem, SessionIdleTimeout: idle,
			Handler: func(ratchetd.Message) { received.Add(1) },
		})
		if err != nil {
			b.Fatal(err)
		}
		return eng
	}

	// Phase 1: the idle majority. RATCHETD_PHASE1 names a directory where
	// it is kept (first run) or taken from (later runs, which copy it into
	// dir), so that phase 2 can be measured again without an hour of
	// phase 1.
	mem := transport.NewMemory(transport.MemoryOptions{})
	eng := open(2*time.Second, mem)
	kept := os.Getenv("RATCHETD_PHASE1")
	var bot *ratchetd.Account
	var err error
	reused := false
	if kept != "" {
		if id, err := os.ReadFile(filepath.Join(kept, "phase1.bot")); err == nil {
			eng.Close()
			mem.Close()
			if err := os.RemoveAll(dir); err != nil {
				b.Fatal(err)
			}
			if out, err := exec.Command("cp", "-a", kept, dir).CombinedOutput(); err != nil {
				b.Fatalf("copy %s: %v %s", kept, err, out)
			}
			mem = transport.NewMemory(transport.MemoryOptions{})
			eng = open(2*time.Second, mem)
			if bot, err = eng.Account(string(id)); err != nil {
				b.Fatal(err)
			}
			reused = true
		}
	}
	if bot == nil {
		if bot, err = eng.CreateAccount(); err != nil {
			b.Fatal(err)
		}
	}
	botID := bot.InstallationID()
	code, _ := bot.ExportBundle()
	raw, _ := base64.RawURLEncoding.DecodeString(code)
	var bb messages.Bundle
	if err := proto.Unmarshal(raw, &bb); err != nil {
		b.Fatal(err)
	}
	botBundle, err := bundle.Verify(&bb)
	if err != nil {
		b.Fatal(err)
	}
	sim, err := newPeerSimulator(bot.Identity(), botBundle.Entries[0])
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if !reused {
		sim.run(b, mem, 0, total-active, &received)
		idleDone := time.Since(start)
		fmt.Printf("phase 1: %d conversations in %v (%.0f/s), rss %d MiB, engine active sessions %d\n",
			total-active, idleDone.Round(time.Second), float64(total-active)/idleDone.Seconds(), rss()>>20, eng.Stats().SessionsActive)
	} else {
		fmt.Printf("phase 1: %d conversations taken from %s\n", total-active, kept)
	}
	if path := os.Getenv("RATCHETD_HEAPPROFILE"); path != "" {
		runtime.GC()
		if f, err := os.Create(path + ".phase1"); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	eng.Close()
	mem.Close()
	if kept != "" && !reused {
		if out, err := exec.Command("cp", "-a", dir, kept).CombinedOutput(); err != nil {
			b.Fatalf("keep phase 1 in %s: %v %s", kept, err, out)
		}
		if err := os.WriteFile(filepath.Join(kept, "phase1.bot"), []byte(botID), 0o600); err != nil {
			b.Fatal(err)
		}
		if os.Getenv("RATCHETD_PHASE1_ONLY") != "" {
			fmt.Printf("phase 1 kept in %s\n", kept)
			return
		}
	}

	// Phase 2: the active set, on the reopened engine.
	mem = transport.NewMemory(transport.MemoryOptions{})
	eng = open(time.Hour, mem)
	defer func() { eng.Close(); mem.Close() }()
	if _, err := eng.Account(botID); err != nil {
		b.Fatal(err)
	}
	received.Store(int64(total - active))
	runtime.GC()
	reopened := rss()
	start = time.Now()
	sim.run(b, mem, total-active, total, &received)
	elapsed := time.Since(start)
	peak := rss()
	runtime.GC()
	time.Sleep(time.Second)
	settled := rss()
	st := eng.Stats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	size := dirSize(dir)
	if path := os.Getenv("RATCHETD_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	hwm := rssHighWater() // the process's peak, both phases, between samples too
	fmt.Printf("sessions_on_disk=%d active=%d engine_active_sessions=%d rss_before=%dMiB rss_reopened=%dMiB rss_end=%dMiB rss_settled=%dMiB rss_high_water=%dMiB rss_anon=%dMiB rss_file=%dMiB heap_inuse=%dMiB heap_unreleased=%dMiB sys=%dMiB dir=%dMiB phase2=%v\n",
		total, active, st.SessionsActive, base>>20, reopened>>20, peak>>20, settled>>20, hwm>>20, procStatus("RssAnon:")>>20, procStatus("RssFile:")>>20,
		ms.HeapInuse>>20, (ms.HeapIdle-ms.HeapReleased)>>20, ms.Sys>>20, size>>20, elapsed.Round(time.Second))
	b.ReportMetric(float64(hwm)/(1<<20), "MiB-rss-peak")
	b.ReportMetric(float64(st.SessionsActive), "active-sessions")
	if st.SessionsActive < int64(active) {
		b.Errorf("only %d sessions active, want %d", st.SessionsActive, active)
	}
}

// peerSimulator makes first contacts from new identities cheaply: each
// peer uses its identity key as its signed prekey, and all share one X3DH
// ephemeral key (the bot's work per peer is unchanged: bundle check,
// passive X3DH with three ECDH, first decrypt with a DH step, commit).
type peerSimulator struct {
	bot       keys.PublicKey
	entry     bundle.Entry
	ephemeral keys.KeyPair
}

func newPeerSimulator(bot keys.PublicKey, e bundle.Entry) (*peerSimulator, error) {
	ek, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &peerSimulator{bot: bot, entry: e, ephemeral: ek}, nil
}

func (s *peerSimulator) envelope(i int) (*messages.Envelope, error) {
	id, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	inst := fmt.Sprintf("peer-%08d-0000-4000-8000-000000000000", i)
	pb, err := bundle.Sign(id, []bundle.Entry{{InstallationID: inst, SignedPreKey: id.Public, Version: 1, ProtocolVersion: 1}}, time.Now().UnixNano())
	if err != nil {
		return nil, err
	}
	sk, err := x3dh.Active(id.Private, s.ephemeral.Private, s.bot, s.entry.SignedPreKey)
	if err != nil {
		return nil, err
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(sk), s.entry.SignedPreKey, rand.Reader)
	if err != nil {
		return nil, err
	}
	_, h, ct, err := ratchet.Encrypt(&st, []byte("hello bot"))
	if err != nil {
		return nil, err
	}
	pm := &messages.ProtocolMessage{
		InstallationId: inst,
		Bundles:        []*messages.Bundle{pb.Proto()},
		EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{s.entry.InstallationID: {
			X3DhHeader: &messages.X3DHHeader{Key: s.ephemeral.Public[:], Id: s.entry.SignedPreKey[:]},
			DrHeader:   h.Proto(s.entry.SignedPreKey),
			Payload:    ct,
		}},
	}
	payload, err := proto.Marshal(pm)
	if err != nil {
		return nil, err
	}
	return transport.Seal(id.Private, transport.PartitionedTopic(s.bot), &s.bot, payload)
}

// run sends first contacts from peers from..to-1 on two goroutines and
// waits until the engine received all of them; the backlog stays bounded.
func (s *peerSimulator) run(b *testing.B, tr transport.Transport, from, to int, received *atomic.Int64) {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(to) {
					return
				}
				env, err := s.envelope(int(i))
				if err == nil {
					err = tr.Publish(env)
				}
				if err != nil {
					failed.Store(err)
					return
				}
				for i-received.Load() > 512 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		// Progress, every 30 s: how far, how fast, how much memory.
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		start, last := time.Now(), received.Load()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := received.Load()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				fmt.Printf("  %v: %d received (%.0f/s now), rss %d MiB (anon %d, file %d), heap in use %d MiB\n",
					time.Since(start).Round(time.Second), n, float64(n-last)/30, rss()>>20, procStatus("RssAnon:")>>20, procStatus("RssFile:")>>20, ms.HeapInuse>>20)
				if path := os.Getenv("RATCHETD_HEAPPROFILE"); path != "" {
					// A profile at every progress line, named by how far.
					if f, err := os.Create(fmt.Sprintf("%s.%07d", path, n)); err == nil {
						pprof.WriteHeapProfile(f)
						f.Close()
					}
				}
				last = n
			}
		}
	}()
	defer close(done)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for received.Load() < int64(to) {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d", received.Load(), to)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dirSize is the total size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
