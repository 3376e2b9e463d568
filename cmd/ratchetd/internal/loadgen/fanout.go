package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
)

// The shape of one fanout group: a sender with three paired devices (it
// sends a copy of everything to its other two) and four members with two
// devices each. One SendGroup is 4 pairwise Sends, each encrypting for the
// member's 2 devices and our own 2 others: 16 deliveries.
const (
	fanoutSenderDevices = 3
	fanoutMembers       = 4
	fanoutMemberDevices = 2
	// fanoutWindow bounds a group's deliveries in flight.
	fanoutWindow = 256
)

type fanout struct{ groups []*group }

type group struct {
	sender   *ratchetd.Account
	members  []keys.PublicKey
	win      *window
	perSend  int          // deliveries one SendGroup makes
	received atomic.Int64 // setup deliveries
}

func (s *fanout) setup(_ context.Context, r *run) error {
	s.groups = make([]*group, r.cfg.Sessions)
	return parallel(len(s.groups), setupWorkers, func(i int) error {
		g, err := newGroup(r)
		if err != nil {
			return err
		}
		s.groups[i] = g
		r.conversations.Add(1)
		return nil
	})
}

func newGroup(r *run) (*group, error) {
	g := &group{win: newWindow(fanoutWindow)}
	recv := func(m ratchetd.Message) {
		if _, _, ok := parse(m.Payload); ok {
			g.win.release()
		} else {
			g.received.Add(1)
		}
	}
	own, err := devices(r.eng, fanoutSenderDevices)
	if err != nil {
		return nil, err
	}
	for _, d := range own {
		r.route(d.InstallationID(), recv)
	}
	if err := pair(own); err != nil {
		return nil, err
	}
	g.sender = own[0]
	for range fanoutMembers {
		devs, err := devices(r.eng, fanoutMemberDevices)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			r.route(d.InstallationID(), recv)
		}
		if err := pair(devs); err != nil {
			return nil, err
		}
		// The member's bundle now lists both of its devices.
		if err := introduce(g.sender, devs[0]); err != nil {
			return nil, err
		}
		g.members = append(g.members, devs[0].Identity())
	}
	// A first group message runs every X3DH; the pairing traffic is
	// counted too, so wait for the deliveries it addressed.
	before := g.received.Load()
	reps, err := g.sender.SendGroup(g.members, []byte("hello group"))
	if err != nil {
		return nil, fmt.Errorf("first group message: %w", err)
	}
	for _, rep := range reps {
		g.perSend += len(rep.Installations)
	}
	deadline := time.Now().Add(setupTimeout)
	for g.received.Load()-before < int64(g.perSend) {
		if time.Now().After(deadline) {
			return nil, errors.New("first group message not received by every device")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return g, nil
}

func (s *fanout) drive(_ context.Context, r *run) error {
	concurrently(len(s.groups), func(i int) {
		g := s.groups[i]
		for r.take(g.perSend) {
			if err := g.win.acquire(g.perSend, r.stop, receiveTimeout); err != nil {
				if err != errStopped {
					r.probe.fail(err)
				}
				return
			}
			reps, err := g.sender.SendGroup(g.members, r.probe.stamp(i))
			n := 0
			for _, rep := range reps {
				n += len(rep.Installations)
			}
			r.probe.sent.Add(int64(len(reps)))
			r.probe.expected.Add(int64(n))
			for range g.perSend - n {
				g.win.release() // slots of deliveries that were not addressed
			}
			if err != nil {
				r.probe.fail(fmt.Errorf("send group: %w", err))
			}
		}
	})
	return nil
}

// Every delivery of a group send is one symmetric-ratchet message: the
// members never answer.
func (s *fanout) ceiling() primitive { return symmetric }

func (s *fanout) senders() int { return len(s.groups) }
