package loadgen

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/cmd/ratchetd/internal/latency"
)

// A probe payload starts with a magic, a message id, the conversation and
// the send time (nanoseconds since the run's monotonic base): latency is
// measured from the start of Send to the handler's receipt, with no shared
// table between sender and receiver.
const (
	probeMagic = "rdlg"
	probeSize  = 4 + 8 + 4 + 8
)

// probe stamps payloads and measures what the handler receives.
type probe struct {
	base   time.Time
	filler []byte
	seq    atomic.Uint64

	hist      latency.Histogram
	delivered atomic.Int64 // probe messages received
	expected  atomic.Int64 // deliveries the successful sends addressed
	sent      atomic.Int64 // successful Send calls
	errs      atomic.Int64

	mu      sync.Mutex
	samples []string // the first few error texts, for the report
}

func newProbe(payload int, seed uint64) *probe {
	p := &probe{base: time.Now(), filler: make([]byte, payload)}
	r := rand.New(rand.NewPCG(seed, 0x6c6f616467656e))
	for i := range p.filler {
		p.filler[i] = byte(r.Uint32())
	}
	return p
}

// now is the time since the base on the monotonic clock.
func (p *probe) now() time.Duration { return time.Since(p.base) }

// stamp builds the payload of a new message of conversation conv.
func (p *probe) stamp(conv int) []byte {
	b := make([]byte, len(p.filler))
	copy(b, p.filler)
	copy(b, probeMagic)
	binary.BigEndian.PutUint64(b[4:], p.seq.Add(1))
	binary.BigEndian.PutUint32(b[12:], uint32(conv))
	binary.BigEndian.PutUint64(b[16:], uint64(p.now()))
	return b
}

// parse reads a probe payload: its conversation and send time.
func parse(payload []byte) (conv int, sentAt time.Duration, ok bool) {
	if len(payload) < probeSize || string(payload[:4]) != probeMagic {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint32(payload[12:])), time.Duration(binary.BigEndian.Uint64(payload[16:])), true
}

// observe records a received probe message and reports its conversation.
func (p *probe) observe(m ratchetd.Message) (conv int, ok bool) {
	conv, sentAt, ok := parse(m.Payload)
	if !ok {
		return 0, false
	}
	p.hist.Record(p.now() - sentAt)
	p.delivered.Add(1)
	return conv, true
}

// fail counts an error and keeps its text if it is among the first few.
func (p *probe) fail(err error) {
	p.errs.Add(1)
	p.mu.Lock()
	if len(p.samples) < 5 {
		p.samples = append(p.samples, err.Error())
	}
	p.mu.Unlock()
}

func (p *probe) errorSamples() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.samples...)
}
