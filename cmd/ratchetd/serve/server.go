// Package serve is `ratchetd serve`: a node that hosts many accounts from
// its data directory, joins the networked transport (transport/node), and
// exposes the gRPC API of messages/api.proto to application code in any
// language.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport/node"
)

// Options of a node.
type Options struct {
	Dir    string   // data directory (Badger)
	Listen string   // host:port of the transport node
	Peers  []string // host:port of other nodes
	API    string   // host:port of the gRPC API
	Logger *slog.Logger
	// MaxPayload caps an envelope payload on the transport.
	MaxPayload int
	// PeerExpiry: a peer node silent this long is no longer waited for
	// (node.Options.PeerExpiry; zero: until this node restarts).
	PeerExpiry time.Duration
	// WarmUp: after its start, the node holds confirmed sends this long
	// (node.Options.WarmUp; zero: three Hello intervals; negative: none).
	WarmUp time.Duration
}

// Server is a running node.
type Server struct {
	messages.UnimplementedRatchetdServer
	o     Options
	node  *node.Node
	eng   *ratchetd.Engine
	grpc  *grpc.Server
	lis   net.Listener
	ready chan struct{}

	mu      sync.Mutex
	pending map[string]*queue // by installation: delivered, not acknowledged
}

// queue holds an installation's unacknowledged messages and wakes the
// streams that wait on it.
type queue struct {
	msgs []ratchetd.Message
	wake chan struct{}
}

// Start starts the transport node, the engine and the API.
func Start(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, pending: map[string]*queue{}, ready: make(chan struct{})}
	n, err := node.Start(node.Options{Listen: o.Listen, Peers: o.Peers, MaxPayload: o.MaxPayload, PeerExpiry: o.PeerExpiry, WarmUp: o.WarmUp, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	s.node = n
	eng, err := ratchetd.Open(ratchetd.Options{Dir: o.Dir, Transport: n, ManualAck: true, Logger: o.Logger, Handler: s.receive})
	if err != nil {
		n.Close()
		return nil, err
	}
	s.eng = eng
	close(s.ready)
	lis, err := net.Listen("tcp", o.API)
	if err != nil {
		eng.Close()
		n.Close()
		return nil, err
	}
	s.lis = lis
	s.grpc = grpc.NewServer()
	messages.RegisterRatchetdServer(s.grpc, s)
	go s.grpc.Serve(lis)
	return s, nil
}

// APIAddress is where the gRPC API listens.
func (s *Server) APIAddress() string { return s.lis.Addr().String() }

// NodeAddress is the transport node's host:port.
func (s *Server) NodeAddress() string { return s.node.Address() }

// NodeStats are the transport node's counters.
func (s *Server) NodeStats() node.Stats { return s.node.Stats() }

// Engine is the node's engine.
func (s *Server) Engine() *ratchetd.Engine { return s.eng }

// Stop shuts down gracefully: no new API calls, running ones finish, then
// the engine commits and closes, then the transport.
func (s *Server) Stop() {
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second): // receive streams never end by themselves
		s.grpc.Stop()
	}
	s.eng.Close()
	s.node.Close()
}

// receive is the engine's handler: the message waits in the installation's
// queue until a client acknowledges it.
func (s *Server) receive(m ratchetd.Message) {
	<-s.ready
	s.mu.Lock()
	q := s.queueLocked(m.RecipientInstallation)
	q.msgs = append(q.msgs, m)
	close(q.wake)
	q.wake = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) queueLocked(id string) *queue {
	q := s.pending[id]
	if q == nil {
		q = &queue{wake: make(chan struct{})}
		s.pending[id] = q
	}
	return q
}

func (s *Server) account(id string) (*ratchetd.Account, error) {
	a, err := s.eng.Account(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "%v", err)
	}
	return a, nil
}

func info(a *ratchetd.Account) *messages.AccountInfo {
	id := a.Identity()
	return &messages.AccountInfo{InstallationId: a.InstallationID(), Identity: id[:]}
}

func (s *Server) CreateAccount(_ context.Context, r *messages.CreateAccountRequest) (*messages.AccountInfo, error) {
	if len(r.IdentityPrivateKey) == 0 {
		a, err := s.eng.CreateAccount()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		return info(a), nil
	}
	sk, err := keys.ParsePrivateKey(r.IdentityPrivateKey)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	a, err := s.eng.AddInstallation(sk)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return info(a), nil
}

func (s *Server) ListAccounts(context.Context, *messages.ListAccountsRequest) (*messages.AccountList, error) {
	out := &messages.AccountList{}
	for _, a := range s.eng.Accounts() {
		out.Accounts = append(out.Accounts, info(a))
	}
	return out, nil
}

func (s *Server) Send(_ context.Context, r *messages.SendRequest) (*messages.SendResponse, error) {
	a, err := s.account(r.InstallationId)
	if err != nil {
		return nil, err
	}
	peer, err := keys.ParsePublicKey(r.PeerIdentity)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "peer identity: %v", err)
	}
	rep, err := a.Send(peer, r.Payload)
	if err != nil {
		if errors.Is(err, ratchetd.ErrNotDelivered) {
			return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
		}
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	return &messages.SendResponse{Installations: rep.Installations, DhFallback: rep.DHFallback, Envelopes: int32(rep.Envelopes), Queued: int32(rep.Queued)}, nil
}

// Receive streams the unacknowledged messages of an installation, then new
// ones, until the client goes away.
func (s *Server) Receive(r *messages.ReceiveRequest, stream messages.Ratchetd_ReceiveServer) error {
	if _, err := s.account(r.InstallationId); err != nil {
		return err
	}
	sent := map[string]bool{}
	for {
		s.mu.Lock()
		q := s.queueLocked(r.InstallationId)
		var next []ratchetd.Message
		pending := make(map[string]bool, len(q.msgs))
		for _, m := range q.msgs {
			pending[string(m.ID)] = true
			if !sent[string(m.ID)] {
				next = append(next, m)
			}
		}
		wake := q.wake
		s.mu.Unlock()
		// Forget what was acknowledged meanwhile: the stream remembers only
		// what is still pending.
		for id := range sent {
			if !pending[id] {
				delete(sent, id)
			}
		}
		for _, m := range next {
			err := stream.Send(&messages.ReceivedMessage{
				Id: m.ID, Sender: m.Sender.Bytes(), SenderInstallation: m.SenderInstallation,
				Payload: m.Payload, Kind: m.Kind.String(), NoForwardSecrecy: m.NoForwardSecrecy,
			})
			if err != nil {
				return err
			}
			sent[string(m.ID)] = true
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-wake:
		}
	}
}

func (s *Server) Ack(_ context.Context, r *messages.AckRequest) (*messages.Done, error) {
	if _, err := s.account(r.InstallationId); err != nil {
		return nil, err
	}
	s.mu.Lock()
	q := s.queueLocked(r.InstallationId)
	var found *ratchetd.Message
	for i, m := range q.msgs {
		if string(m.ID) == string(r.Id) {
			found = &q.msgs[i]
			q.msgs = append(q.msgs[:i:i], q.msgs[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	if found == nil {
		return &messages.Done{}, nil // acknowledged already
	}
	if err := s.eng.Ack(*found); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &messages.Done{}, nil
}

func (s *Server) ListDevices(_ context.Context, r *messages.DevicesRequest) (*messages.DevicesResponse, error) {
	a, err := s.account(r.InstallationId)
	if err != nil {
		return nil, err
	}
	var id keys.PublicKey
	if len(r.Identity) > 0 {
		if id, err = keys.ParsePublicKey(r.Identity); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%v", err)
		}
	}
	devs, err := a.Devices(id)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out := &messages.DevicesResponse{}
	for _, d := range devs {
		out.Devices = append(out.Devices, &messages.DeviceInfo{
			Identity: d.Identity.Bytes(), InstallationId: d.InstallationID, Enabled: d.Enabled,
			Version: d.Version, LastActiveUnixNano: d.LastActive.UnixNano(),
		})
	}
	return out, nil
}

func (s *Server) ApproveDevice(_ context.Context, r *messages.DeviceRequest) (*messages.Done, error) {
	return s.setDevice(r, true)
}

func (s *Server) DisableDevice(_ context.Context, r *messages.DeviceRequest) (*messages.Done, error) {
	return s.setDevice(r, false)
}

func (s *Server) setDevice(r *messages.DeviceRequest, on bool) (*messages.Done, error) {
	a, err := s.account(r.InstallationId)
	if err != nil {
		return nil, err
	}
	id, err := keys.ParsePublicKey(r.Identity)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if on {
		err = a.ApproveDevice(id, r.DeviceInstallationId)
	} else {
		err = a.DisableDevice(id, r.DeviceInstallationId)
	}
	if errors.Is(err, ratchetd.ErrUnknownDevice) {
		return nil, status.Errorf(codes.NotFound, "%v", err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &messages.Done{}, nil
}

func (s *Server) AnnounceDevice(_ context.Context, r *messages.AccountRef) (*messages.Done, error) {
	a, err := s.account(r.InstallationId)
	if err != nil {
		return nil, err
	}
	if err := a.AnnounceDevice(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	return &messages.Done{}, nil
}

func (s *Server) ExportBundle(_ context.Context, r *messages.AccountRef) (*messages.BundleString, error) {
	a, err := s.account(r.InstallationId)
	if err != nil {
		return nil, err
	}
	b, err := a.ExportBundle()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &messages.BundleString{Bundle: b}, nil
}

func (s *Server) ImportBundle(_ context.Context, r *messages.ImportBundleRequest) (*messages.Done, error) {
	a, err := s.account(r.InstallationId)
	if err != nil {
		return nil, err
	}
	if err := a.ImportBundle(r.Bundle); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return &messages.Done{}, nil
}

func (s *Server) NodeStatus(context.Context, *messages.NodeStatusRequest) (*messages.NodeStatusResponse, error) {
	st := s.node.Stats()
	r := &messages.NodeStatusResponse{Address: s.node.Address(), PeerTopics: map[string]int32{}, Dropped: st.Dropped, Published: st.Published, Delivered: st.Delivered}
	for a, n := range st.PeerTopics {
		r.PeerTopics[a] = int32(n)
	}
	out, in, err := s.eng.Pending()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "counting pending records: %v", err)
	}
	r.OutboxPending, r.InboxPending = int64(out), int64(in)
	return r, nil
}

// String describes the node.
func (s *Server) String() string {
	return fmt.Sprintf("ratchetd node %s (api %s, data %s)", s.NodeAddress(), s.APIAddress(), s.o.Dir)
}
