package loadgen

import (
	"context"
	"fmt"

	"github.com/ratchetd/ratchetd"
)

// x3dhScenario: a new session per message. Each worker has a receiver
// whose bundle it knows; every message comes from a fresh account (new
// identity, new installation), so each one is a full X3DH on both sides.
// The fresh account is stopped once its message arrived, so memory stays
// bounded by the workers, not by the messages sent. Account creation
// counts in the throughput but not in the latency (send → receipt).
type x3dhScenario struct {
	receivers []*ratchetd.Account
	bundles   []string
	got       []signal
}

func (s *x3dhScenario) setup(_ context.Context, r *run) error {
	n := r.cfg.Sessions
	s.receivers, s.bundles, s.got = make([]*ratchetd.Account, n), make([]string, n), make([]signal, n)
	for i := range n {
		a, err := r.eng.CreateAccount()
		if err != nil {
			return err
		}
		b, err := a.ExportBundle()
		if err != nil {
			return err
		}
		got := newSignal()
		r.route(a.InstallationID(), func(ratchetd.Message) { got.notify() })
		s.receivers[i], s.bundles[i], s.got[i] = a, b, got
		r.conversations.Add(1)
	}
	return nil
}

func (s *x3dhScenario) drive(_ context.Context, r *run) error {
	concurrently(len(s.receivers), func(i int) {
		for r.take(1) {
			if err := s.once(r, i); err != nil {
				r.probe.fail(err)
				return
			}
		}
	})
	return nil
}

// once sends one message from a new account to receiver i.
func (s *x3dhScenario) once(r *run, i int) error {
	a, err := r.eng.CreateAccount()
	if err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	defer r.eng.Actors().StopInstallation(a.InstallationID())
	if err := a.ImportBundle(s.bundles[i]); err != nil {
		return fmt.Errorf("import bundle: %w", err)
	}
	if _, err := r.send(a, s.receivers[i], i); err != nil {
		return nil // counted by send
	}
	return s.got[i].wait(nil, receiveTimeout)
}

func (s *x3dhScenario) ceiling() primitive { return newSession }

func (s *x3dhScenario) senders() int { return len(s.receivers) }
