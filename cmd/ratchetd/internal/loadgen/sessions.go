package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/ratchetd/ratchetd"
)

// sessions: a bot backend's shape. One hub account holds --sessions
// conversations, each with its own peer account (X3DH, then one reply, so
// every session is confirmed on both sides); then a few of them (1 %, at
// least one) converse in strict alternation while the rest stay idle. The
// setup's growth of the live heap, divided by the conversations, is the
// memory a conversation costs — both ends, since the peers are hosted in
// the same engine.
type sessions struct {
	hub    *ratchetd.Account
	peers  []*ratchetd.Account
	hubGot []signal
	got    []signal
	byID   sync.Map // peer installation id → index
	active []int
}

func (s *sessions) setup(_ context.Context, r *run) error {
	n := r.cfg.Sessions
	hub, err := r.eng.CreateAccount()
	if err != nil {
		return err
	}
	hb, err := hub.ExportBundle()
	if err != nil {
		return err
	}
	s.hub, s.peers, s.hubGot, s.got = hub, make([]*ratchetd.Account, n), make([]signal, n), make([]signal, n)
	for i := range n {
		s.hubGot[i], s.got[i] = newSignal(), newSignal()
	}
	r.route(hub.InstallationID(), func(m ratchetd.Message) {
		i, _, ok := parse(m.Payload)
		if !ok {
			v, found := s.byID.Load(m.SenderInstallation)
			if !found {
				return
			}
			i = v.(int)
		}
		if i >= 0 && i < n {
			s.hubGot[i].notify()
		}
	})
	err = parallel(n, setupWorkers, func(i int) error {
		p, err := r.eng.CreateAccount()
		if err != nil {
			return err
		}
		s.peers[i] = p
		s.byID.Store(p.InstallationID(), i)
		r.route(p.InstallationID(), func(ratchetd.Message) { s.got[i].notify() })
		if err := p.ImportBundle(hb); err != nil {
			return fmt.Errorf("import hub bundle: %w", err)
		}
		if _, err := p.Send(hub.Identity(), []byte("hello")); err != nil {
			return fmt.Errorf("first message: %w", err)
		}
		if err := s.hubGot[i].wait(nil, setupTimeout); err != nil {
			return fmt.Errorf("first message: %w", err)
		}
		if _, err := hub.Send(p.Identity(), []byte("welcome")); err != nil {
			return fmt.Errorf("reply: %w", err)
		}
		if err := s.got[i].wait(nil, setupTimeout); err != nil {
			return fmt.Errorf("reply: %w", err)
		}
		if c := r.conversations.Add(1); r.cfg.Progress != nil && c%100 == 0 {
			fmt.Fprintf(r.cfg.Progress, "\r%s: %d/%d conversations set up", r.cfg.Scenario, c, n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	k := max(1, n/100)
	s.active = rand.New(rand.NewPCG(r.cfg.Seed, 0x61637469766500)).Perm(n)[:k]
	return nil
}

func (s *sessions) drive(_ context.Context, r *run) error {
	concurrently(len(s.active), func(j int) {
		i := s.active[j]
		fromHub := false
		for r.take(1) {
			from, to, got := s.peers[i], s.hub, s.hubGot[i]
			if fromHub {
				from, to, got = s.hub, s.peers[i], s.got[i]
			}
			if _, err := r.send(from, to, i); err != nil {
				return
			}
			if err := got.wait(nil, receiveTimeout); err != nil {
				r.probe.fail(err)
				return
			}
			fromHub = !fromHub
		}
	})
	return nil
}

// The active conversations alternate, like pingpong.
func (s *sessions) ceiling() primitive { return alternating }

func (s *sessions) senders() int { return len(s.active) }
