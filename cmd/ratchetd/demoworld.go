package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// world is the demo's stage: one engine on a Badger directory, hosting
// every device, on a manual in-memory transport whose faults (reordering,
// duplication) come from a seeded generator. The script decides when
// envelopes are delivered or lost; each delivery is processed before the
// call returns, so the transcript is the same on every run with one seed.
type world struct {
	out    io.Writer
	dir    string
	mem    *transport.Memory
	tap    *tap
	rand   io.Reader
	logger *slog.Logger
	eng    *ratchetd.Engine

	identities map[string]keys.KeyPair // identity name → key
	devices    map[string]*ratchetd.Account
	order      []string          // device names in creation order
	names      map[string]string // installation id → device name

	mu        sync.Mutex
	got       map[string]map[int]int // device name → logical id → copies received
	batch     map[string][]int       // receipts since the last report
	handled   int                    // every message the handler saw
	repeats   int                    // a logical message seen again on a device (a re-send's copy, a redelivery)
	ledger    []*logical
	resent    int
	resentIDs map[int]bool
	lost      []lostEnvelope // what the script dropped
	restarts  int
	prevStats ratchetd.Stats // counters of the engines closed before this one
}

// seeded is an io.Reader over a ChaCha8 stream, safe for concurrent use.
// The demo draws every key from it so that two runs with one seed create
// the same installation ids, and so the same order of subscribers and the
// same fault schedule. Never outside a demo: the keys are predictable.
type seeded struct {
	mu sync.Mutex
	c  *rand.ChaCha8
}

func newSeeded(seed uint64) *seeded {
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	copy(s[8:], "ratchetd demo: not a secret")
	return &seeded{c: rand.NewChaCha8(s)}
}

func (s *seeded) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Read(p)
}

func newWorld(out io.Writer, dir string, seed uint64, logger *slog.Logger) *world {
	mem := transport.NewMemory(transport.MemoryOptions{
		Manual: true,
		Faults: transport.Faults{Reorder: 0.35, Duplicate: 0.15, Seed: seed},
	})
	return &world{
		out: out, dir: dir, mem: mem, tap: &tap{Transport: mem, labels: map[string]string{}},
		rand: newSeeded(seed), logger: logger,
		identities: map[string]keys.KeyPair{}, devices: map[string]*ratchetd.Account{}, names: map[string]string{},
		got: map[string]map[int]int{}, batch: map[string][]int{}, resentIDs: map[int]bool{},
	}
}

// open starts an engine on the directory.
func (w *world) open() error {
	eng, err := ratchetd.Open(ratchetd.Options{
		Dir: w.dir, Transport: w.tap, Rand: w.rand, Handler: w.handle, Logger: w.logger,
	})
	if err != nil {
		return openError(w.dir, err)
	}
	w.eng = eng
	return nil
}

// restart closes the engine — actors stop, Badger closes — and opens a new
// one on the same directory; every account is found again by its id. The
// transport is not the engine's: it stands for the network, which outlives
// the process.
func (w *world) restart() (int, error) {
	st := w.eng.Stats()
	if err := w.eng.Close(); err != nil {
		return 0, fmt.Errorf("demo: close: %w", err)
	}
	w.prevStats = addStats(w.prevStats, st)
	if err := w.open(); err != nil {
		return 0, err
	}
	w.restarts++
	for _, name := range w.order {
		a, err := w.eng.Account(w.devices[name].InstallationID())
		if err != nil {
			return 0, fmt.Errorf("demo: %s after the restart: %w", name, err)
		}
		w.devices[name] = a
	}
	return len(w.eng.Accounts()), nil
}

func (w *world) close() {
	if w.eng != nil {
		w.prevStats = addStats(w.prevStats, w.eng.Stats())
		w.eng.Close()
		w.eng = nil
	}
	w.mem.Close()
}

// stats are the counters of every engine of the run.
func (w *world) stats() ratchetd.Stats {
	if w.eng == nil {
		return w.prevStats
	}
	return addStats(w.prevStats, w.eng.Stats())
}

func addStats(a, b ratchetd.Stats) ratchetd.Stats {
	a.Decrypted += b.Decrypted
	a.Duplicates += b.Duplicates
	a.DecryptFailures += b.DecryptFailures
	a.Adverts += b.Adverts
	a.X3DHActive += b.X3DHActive
	a.X3DHPassive += b.X3DHPassive
	a.Published += b.Published
	a.Redelivered += b.Redelivered
	a.NotForDevice += b.NotForDevice
	return a
}

// handle is the application: it records which device got which message.
func (w *world) handle(m ratchetd.Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handled++
	id, ok := logicalID(m.Payload)
	if !ok {
		return
	}
	dev := w.names[m.RecipientInstallation]
	if w.got[dev] == nil {
		w.got[dev] = map[int]int{}
	}
	w.got[dev][id]++
	if w.got[dev][id] > 1 {
		w.repeats++
		return
	}
	w.batch[dev] = append(w.batch[dev], id)
}

// payload is "#id text": the id names the logical message on every device.
func payload(id int, text string) []byte { return []byte("#" + strconv.Itoa(id) + " " + text) }

func logicalID(p []byte) (int, bool) {
	s := string(p)
	if !strings.HasPrefix(s, "#") {
		return 0, false
	}
	n, _, _ := strings.Cut(s[1:], " ")
	id, err := strconv.Atoi(n)
	return id, err == nil
}

// settle waits until the application handler, which runs on its own
// goroutine, has taken every message the deliveries produced.
func (w *world) settle() {
	deadline := time.Now().Add(5 * time.Second)
	last, stable := -1, 0
	for time.Now().Before(deadline) && stable < 5 {
		w.mu.Lock()
		n := w.handled
		w.mu.Unlock()
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		time.Sleep(3 * time.Millisecond)
	}
}

func (w *world) printf(format string, a ...any) { fmt.Fprintf(w.out, format+"\n", a...) }

// act starts a section of the transcript.
func (w *world) act(n int, title string) { w.printf("\n== %d. %s", n, title) }

// addIdentity creates an identity with devices named identity/device.
func (w *world) addIdentity(name string, devs ...string) error {
	kp, err := keys.GenerateKey(w.rand)
	if err != nil {
		return err
	}
	w.identities[name] = kp
	for _, d := range devs {
		if _, err := w.addDevice(name, d); err != nil {
			return err
		}
	}
	return nil
}

func (w *world) addDevice(identity, device string) (*ratchetd.Account, error) {
	a, err := w.eng.AddInstallation(w.identities[identity].Private)
	if err != nil {
		return nil, fmt.Errorf("demo: add %s/%s: %w", identity, device, err)
	}
	name := identity + "/" + device
	w.devices[name] = a
	w.order = append(w.order, name)
	w.mu.Lock()
	w.names[a.InstallationID()] = name
	w.mu.Unlock()
	return a, nil
}

// devicesOf lists the device names of an identity.
func (w *world) devicesOf(identity string) []string {
	var out []string
	for _, n := range w.order {
		if strings.HasPrefix(n, identity+"/") {
			out = append(out, n)
		}
	}
	return out
}

func (w *world) identityOf(device string) string { i, _, _ := strings.Cut(device, "/"); return i }

// send sends a new logical message and prints what went on the wire.
func (w *world) send(from, to, text string) (*logical, error) {
	l := &logical{id: len(w.ledger) + 1, from: from, to: to, text: text}
	w.ledger = append(w.ledger, l)
	targets, err := w.transmit(l, "")
	if err != nil {
		return nil, err
	}
	l.targets = targets
	return l, nil
}

// transmit sends l once more and returns the devices it was encrypted for.
func (w *world) transmit(l *logical, note string) ([]string, error) {
	mark := w.tap.mark()
	w.tap.setLabel(fmt.Sprintf("#%d", l.id))
	defer w.tap.setLabel("")
	rep, err := w.devices[l.from].Send(w.identities[l.to].Public, payload(l.id, l.text))
	if err != nil {
		return nil, fmt.Errorf("demo: %s → %s #%d: %w", l.from, l.to, l.id, err)
	}
	l.sends++
	var targets []string
	for _, id := range rep.Installations {
		targets = append(targets, w.names[id])
	}
	if rep.DHFallback {
		targets = append(targets, w.devicesOf(l.to)...) // the "none" entry opens on every device
	}
	sort.Strings(targets)
	w.printf("%s → %s: #%d %q%s", l.from, l.to, l.id, l.text, note)
	for _, env := range w.tap.since(mark) {
		w.describe(env)
	}
	return targets, nil
}

// describe prints one published ProtocolMessage's entries: which device
// each is for and which headers it carries.
func (w *world) describe(pm *messages.ProtocolMessage) {
	ids := make([]string, 0, len(pm.EncryptedMessage))
	for id := range pm.EncryptedMessage {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int { return strings.Compare(w.nameOr(a), w.nameOr(b)) })
	for _, id := range ids {
		e := pm.EncryptedMessage[id]
		var parts []string
		// Ephemeral and ratchet keys are not shown: the actors of one send
		// draw them concurrently, so which session gets which key varies
		// from run to run even with one seed; the rest does not.
		if h := e.GetX3DhHeader(); h != nil {
			parts = append(parts, "X3DH against prekey "+short(h.Id))
		}
		if h := e.GetDrHeader(); h != nil {
			parts = append(parts, fmt.Sprintf("DR n=%d pn=%d session %s", h.N, h.Pn, short(h.Id)))
		}
		if h := e.GetDhHeader(); h != nil {
			parts = append(parts, "DH fallback (no bundle known)")
		}
		w.printf("    for %-13s %s", w.nameOr(id), strings.Join(parts, ", "))
	}
}

func (w *world) nameOr(installation string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n, ok := w.names[installation]; ok {
		return n
	}
	return installation
}

// short abbreviates a key for the transcript.
func short(b []byte) string {
	h := hex.EncodeToString(b)
	if len(h) > 10 {
		return h[:10] + "…"
	}
	return h
}

// deliver delivers up to max held envelopes (0: all, and those they
// cause) and prints what each device received.
func (w *world) deliver(max int) {
	dups := w.stats().Duplicates
	n := w.mem.DeliverAll(max)
	w.settle()
	w.mu.Lock()
	batch := w.batch
	w.batch = map[string][]int{}
	w.mu.Unlock()
	if n == 0 {
		return
	}
	w.printf("  ~ %d envelope(s) delivered", n)
	for _, dev := range w.order {
		ids := batch[dev]
		if len(ids) == 0 {
			continue
		}
		var s []string
		for _, id := range ids {
			s = append(s, "#"+strconv.Itoa(id))
		}
		note := ""
		if !slices.IsSorted(ids) {
			note = "  (out of order: the skipped keys were kept, nothing is lost)"
		}
		w.printf("    %-13s ← %s%s", dev, strings.Join(s, " "), note)
	}
	if d := w.stats().Duplicates - dups; d > 0 {
		w.printf("    %d duplicate delivery(ies) from the network recognised and dropped by the engine", d)
	}
}

// drop loses one held envelope, chosen by the seeded generator.
func (w *world) drop() {
	env := w.mem.DropOne()
	if env == nil {
		return
	}
	what := w.tap.label(env)
	id, _ := strconv.Atoi(strings.TrimPrefix(what, "#"))
	if what == "" {
		what = "a control message"
	}
	to := "?"
	if pub, err := keys.ParsePublicKey(env.Recipient); err == nil {
		for name, kp := range w.identities {
			if kp.Public == pub {
				to = name
			}
		}
	}
	desc := fmt.Sprintf("%s (the envelope to %s)", what, to)
	if devs := w.devicesOf(to); len(devs) == 1 {
		desc = fmt.Sprintf("%s (the envelope to %s)", what, devs[0])
	} else if len(devs) > 1 {
		desc = fmt.Sprintf("%s (one device's copy of the envelope to %s)", what, to)
	}
	w.lost = append(w.lost, lostEnvelope{id: id, desc: desc})
	w.printf("  ✗ the network lost %s", desc)
}
