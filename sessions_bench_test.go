package ratchetd_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
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

// BenchmarkManySessions measures the resident memory of one engine that
// holds RATCHETD_SESSIONS sessions (10 000 by default; the durability issue
// reports 100 000) with a Badger store, most of them idle and passivated.
// The peers are simulated with the crypto layer directly: each sends the
// bot one X3DH message with its bundle, so the engine does the full receive
// path (bundle verification, passive X3DH, decrypt, commit) per session.
//
//	RATCHETD_SESSIONS=100000 go test -run '^$' -bench ManySessions -benchtime 1x .
func BenchmarkManySessions(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("RATCHETD_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	for range b.N {
		manySessions(b, n)
	}
}

func manySessions(b *testing.B, n int) {
	mem := transport.NewMemory(transport.MemoryOptions{})
	defer mem.Close()
	var received atomic.Int64
	eng, err := ratchetd.Open(ratchetd.Options{
		Dir: b.TempDir(), Transport: mem, SessionIdleTimeout: 2 * time.Second,
		Handler: func(ratchetd.Message) { received.Add(1) },
	})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	bot, err := eng.CreateAccount()
	if err != nil {
		b.Fatal(err)
	}
	code, _ := bot.ExportBundle()
	raw, _ := base64.RawURLEncoding.DecodeString(code)
	var bb messages.Bundle
	proto.Unmarshal(raw, &bb)
	botBundle, err := bundle.Verify(&bb)
	if err != nil {
		b.Fatal(err)
	}
	botEntry := botBundle.Entries[0]
	base := rss()
	start := time.Now()
	for i := range n {
		if err := simulatedPeer(mem, bot.Identity(), botEntry, i); err != nil {
			b.Fatal(err)
		}
		for int64(i+1)-received.Load() > 256 { // keep the backlog bounded
			time.Sleep(time.Millisecond)
		}
	}
	for received.Load() < int64(n) {
		time.Sleep(10 * time.Millisecond)
		if time.Since(start) > 30*time.Minute {
			b.Fatalf("only %d of %d received", received.Load(), n)
		}
	}
	elapsed := time.Since(start)
	peak := rss()
	time.Sleep(7 * time.Second) // passivation: sessions after 2 s, supervisors after 4 s
	runtime.GC()
	idle := rss()
	if path := os.Getenv("RATCHETD_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	st := eng.Stats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "sessions/s")
	b.ReportMetric(float64(peak-base)/float64(n), "B/session-active")
	b.ReportMetric(float64(idle)/(1<<20), "MiB-rss-idle")
	fmt.Printf("sessions=%d created_in=%v rss_before=%dMiB rss_peak=%dMiB rss_after_passivation=%dMiB heap_inuse=%dMiB active_sessions=%d passivations=%d supervisor_passivations=%d commits=%d max_batch=%d\n",
		n, elapsed.Round(time.Millisecond), base>>20, peak>>20, idle>>20, ms.HeapInuse>>20, st.SessionsActive, st.Passivations, st.SupervisorPassivations, st.Commits, st.MaxBatch)
}

// simulatedPeer sends the bot a first X3DH message from a new identity.
func simulatedPeer(tr transport.Transport, bot keys.PublicKey, e bundle.Entry, i int) error {
	id, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	spk, _ := keys.GenerateKey(rand.Reader)
	inst := fmt.Sprintf("peer-%08d-0000-4000-8000-000000000000", i)
	pb, err := bundle.Sign(id, []bundle.Entry{{InstallationID: inst, SignedPreKey: spk.Public, Version: 1, ProtocolVersion: 1}}, time.Now().UnixNano())
	if err != nil {
		return err
	}
	ini, err := x3dh.Initiate(rand.Reader, id.Private, bot, e.SignedPreKey)
	if err != nil {
		return err
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), e.SignedPreKey, rand.Reader)
	if err != nil {
		return err
	}
	_, h, ct, err := ratchet.Encrypt(&st, []byte("hello bot"))
	if err != nil {
		return err
	}
	pm := &messages.ProtocolMessage{
		InstallationId: inst,
		Bundles:        []*messages.Bundle{pb.Proto()},
		EncryptedMessage: map[string]*messages.EncryptedMessageProtocol{e.InstallationID: {
			X3DhHeader: &messages.X3DHHeader{Key: ini.Ephemeral[:], Id: e.SignedPreKey[:]},
			DrHeader:   h.Proto(e.SignedPreKey),
			Payload:    ct,
		}},
	}
	payload, _ := proto.Marshal(pm)
	env, err := transport.Seal(id.Private, transport.PartitionedTopic(bot), &bot, payload)
	if err != nil {
		return err
	}
	return tr.Publish(env)
}

// rss is the process's resident set size in bytes.
func rss() int64 { return procStatus("VmRSS:") }

// rssHighWater is the process's peak resident set size in bytes.
func rssHighWater() int64 { return procStatus("VmHWM:") }

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
