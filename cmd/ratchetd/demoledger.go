package main

// The ledger: the logical messages of the demo, who was to get each, and
// what the network lost.

// logical is one message of the conversation, as the application sees it:
// its targets are the installations its first send was encrypted for.
type logical struct {
	id      int
	from    string // device name
	to      string // identity name
	text    string
	targets []string // device names
	sends   int
}

// lostEnvelope is an envelope the script made the network lose.
type lostEnvelope struct {
	id   int // logical message, 0 for a control message
	desc string
}

// missing lists, per logical message, the targets that never got it.
func (w *world) missing() map[*logical][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[*logical][]string{}
	for _, l := range w.ledger {
		for _, t := range l.targets {
			if w.got[t][l.id] == 0 {
				out[l] = append(out[l], t)
			}
		}
	}
	return out
}

// tally counts the targets reached over the targets addressed.
func (w *world) tally() (delivered, expected int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.ledger {
		for _, t := range l.targets {
			expected++
			if w.got[t][l.id] > 0 {
				delivered++
			}
		}
	}
	return delivered, expected
}
