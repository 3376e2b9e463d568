package serve

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/messages"
)

// The test binary doubles as a `serve` process.
func TestMain(m *testing.M) {
	if os.Getenv("RATCHETD_SERVE_CHILD") == "1" {
		o := Options{Dir: os.Getenv("DIR"), Listen: os.Getenv("LISTEN"), API: os.Getenv("API")}
		if os.Getenv("RATCHETD_DEBUG") != "" {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		if p := os.Getenv("PEERS"); p != "" {
			o.Peers = strings.Split(p, ",")
		}
		s, err := Start(o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		s.Stop()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// freePort is a free loopback address whose port is below the kernel's
// ephemeral range (32768 and up here). A port the kernel hands out (":0")
// can be taken, before the child process listens on it, by any outgoing
// connection's local end, and the node tests, which run beside these,
// open many (seen in make test: "serve: node: listen tcp 127.0.0.1:35651:
// bind: address already in use"). 10000-19999 also stays clear of the
// node tests' own range (transport/node's stableAddr: 20000-31999).
func freePort(t testing.TB) string {
	t.Helper()
	for range 100 {
		a := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+mrand.IntN(10000)))
		if l, err := net.Listen("tcp", a); err == nil {
			l.Close()
			return a
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// proc is one `serve` process and its gRPC client.
type proc struct {
	t                testing.TB
	dir, listen, api string
	peers            []string
	cmd              *exec.Cmd
	exited           chan struct{} // closed once cmd has exited (waitErr set)
	waitErr          error
	conn             *grpc.ClientConn
	c                messages.RatchetdClient
}

func (p *proc) start() {
	exe, _ := os.Executable()
	p.cmd = exec.Command(exe, "-test.run=^$")
	p.cmd.Env = append(os.Environ(), "RATCHETD_SERVE_CHILD=1", "DIR="+p.dir, "LISTEN="+p.listen, "API="+p.api, "PEERS="+strings.Join(p.peers, ","))
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exited := make(chan struct{})
	p.exited = exited
	go func(c *exec.Cmd) { p.waitErr = c.Wait(); close(exited) }(p.cmd)
	conn, err := grpc.NewClient(p.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.t.Fatal(err)
	}
	p.conn, p.c = conn, messages.NewRatchetdClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := p.c.ListAccounts(ctx, &messages.ListAccountsRequest{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("serve on %s did not come up: %v", p.api, err)
		}
		select {
		case <-exited:
			// Its stderr (above) says why: a port taken since freePort,
			// say. Failing now names the cause instead of a timeout.
			p.t.Fatalf("serve on %s (node %s) exited before it came up: %v", p.api, p.listen, p.waitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	if p.conn != nil {
		p.conn.Close()
	}
}

func (p *proc) term() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
	if p.conn != nil {
		p.conn.Close()
	}
}

// inbox is what one installation's application received, through the API.
type inbox struct {
	mu   sync.Mutex
	seen map[string][]string // payload -> ids
}

// follow streams an installation's messages, records and acknowledges each.
func follow(t *testing.T, p *proc, inst string, in *inbox) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			st, err := p.c.Receive(ctx, &messages.ReceiveRequest{InstallationId: inst})
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for {
				m, err := st.Recv()
				if err != nil {
					break
				}
				in.mu.Lock()
				in.seen[string(m.Payload)] = append(in.seen[string(m.Payload)], fmt.Sprintf("%x", m.Id))
				in.mu.Unlock()
				p.c.Ack(ctx, &messages.AckRequest{InstallationId: inst, Id: m.Id})
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return cancel
}

func (in *inbox) has(payloads ...string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, p := range payloads {
		if len(in.seen[p]) == 0 {
			return false
		}
	}
	return true
}

// must panics on an error: in a test, a failure with its stack.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestServeProcesses: three `serve` processes on 127.0.0.1, driven only
// through the gRPC API, converse 1:1, across a multi-device identity and in
// a group fan-out; one is killed with SIGKILL mid-conversation and
// restarted; every message arrives at the application, each under one id.
func TestServeProcesses(t *testing.T) {
	base := t.TempDir()
	addrs := []string{freePort(t), freePort(t), freePort(t)}
	ps := make([]*proc, 3)
	defer func() { // also when a start fails: no serve process outlives the test
		for _, p := range ps {
			if p != nil && p.exited != nil {
				p.term()
			}
		}
	}()
	for i := range ps {
		var peers []string
		for j, a := range addrs {
			if j != i {
				peers = append(peers, a)
			}
		}
		ps[i] = &proc{t: t, dir: filepath.Join(base, fmt.Sprint(i)), listen: addrs[i], api: freePort(t), peers: peers}
		ps[i].start()
	}
	ctx := context.Background()
	// meshed waits until every node knows every other node's topics (the
	// transport is eventually consistent: announcements repeat every second).
	meshed := func(topicsPerPeer map[string]int32) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok := true
			var seen []string // what each node knew, for the failure message
			for _, p := range ps {
				st, err := p.c.NodeStatus(ctx, &messages.NodeStatusRequest{})
				if err != nil {
					ok = false
					seen = append(seen, fmt.Sprintf("%s: %v", p.listen, err))
					continue
				}
				seen = append(seen, fmt.Sprintf("%s knows %v", p.listen, st.PeerTopics))
				for _, q := range ps {
					if q != p && st.PeerTopics[q.listen] < topicsPerPeer[q.listen] {
						ok = false
					}
					if q != p {
						if _, known := st.PeerTopics[q.listen]; !known {
							ok = false
						}
					}
				}
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the nodes did not learn each other's topics (want %v):\n%s", topicsPerPeer, strings.Join(seen, "\n"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	meshed(nil)
	aliceKey := must(keys.GenerateKey(rand.Reader))
	alice1 := must(ps[0].c.CreateAccount(ctx, &messages.CreateAccountRequest{IdentityPrivateKey: aliceKey.Private[:]}))
	alice2 := must(ps[2].c.CreateAccount(ctx, &messages.CreateAccountRequest{IdentityPrivateKey: aliceKey.Private[:]}))
	bob := must(ps[1].c.CreateAccount(ctx, &messages.CreateAccountRequest{}))
	carol := must(ps[2].c.CreateAccount(ctx, &messages.CreateAccountRequest{}))
	// Each installation subscribes to 2 topics (partitioned, negotiated).
	meshed(map[string]int32{ps[0].listen: 2, ps[1].listen: 2, ps[2].listen: 4})

	// Alice's two devices pair: each announces itself, each approves the other.
	for _, x := range []struct {
		p *proc
		a *messages.AccountInfo
	}{{ps[0], alice1}, {ps[2], alice2}} {
		must(x.p.c.AnnounceDevice(ctx, &messages.AccountRef{InstallationId: x.a.InstallationId}))
	}
	approve := func(p *proc, self, other *messages.AccountInfo) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := p.c.ApproveDevice(ctx, &messages.DeviceRequest{InstallationId: self.InstallationId, Identity: self.Identity, DeviceInstallationId: other.InstallationId})
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("approve %s on %s: %v", other.InstallationId, self.InstallationId, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	approve(ps[0], alice1, alice2)
	approve(ps[2], alice2, alice1)
	// Bundles, as a QR code would carry them.
	share := func(from *proc, a *messages.AccountInfo, to *proc, b *messages.AccountInfo) {
		s := must(from.c.ExportBundle(ctx, &messages.AccountRef{InstallationId: a.InstallationId}))
		must(to.c.ImportBundle(ctx, &messages.ImportBundleRequest{InstallationId: b.InstallationId, Bundle: s.Bundle}))
	}
	share(ps[0], alice1, ps[1], bob)   // Alice's bundle lists both her devices
	share(ps[1], bob, ps[0], alice1)   //
	share(ps[1], bob, ps[2], alice2)   //
	share(ps[0], alice1, ps[2], carol) //
	share(ps[1], bob, ps[2], carol)    //

	inboxes := map[string]*inbox{}
	procOf := map[string]*proc{alice1.InstallationId: ps[0], bob.InstallationId: ps[1], alice2.InstallationId: ps[2], carol.InstallationId: ps[2]}
	cancels := map[string]context.CancelFunc{}
	for inst, p := range procOf {
		inboxes[inst] = &inbox{seen: map[string][]string{}}
		cancels[inst] = follow(t, p, inst, inboxes[inst])
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	send := func(p *proc, from *messages.AccountInfo, to []byte, text string) {
		t.Helper()
		if _, err := p.c.Send(ctx, &messages.SendRequest{InstallationId: from.InstallationId, PeerIdentity: to, Payload: []byte(text)}); err != nil {
			t.Fatalf("send %q: %v", text, err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	send(ps[0], alice1, bob.Identity, "a1->bob")
	waitFor("bob to get a1", func() bool { return inboxes[bob.InstallationId].has("a1->bob") })
	waitFor("alice2 to get her own copy", func() bool { return inboxes[alice2.InstallationId].has("a1->bob") })
	send(ps[1], bob, alice1.Identity, "bob->alice")
	waitFor("both of alice's devices", func() bool {
		return inboxes[alice1.InstallationId].has("bob->alice") && inboxes[alice2.InstallationId].has("bob->alice")
	})
	// Group fan-out from Carol.
	for _, m := range [][]byte{alice1.Identity, bob.Identity} {
		send(ps[2], carol, m, "carol->group")
	}
	waitFor("the group", func() bool {
		return inboxes[alice1.InstallationId].has("carol->group") && inboxes[alice2.InstallationId].has("carol->group") && inboxes[bob.InstallationId].has("carol->group")
	})

	// Bob's process is killed mid-conversation and restarted.
	var sent []string
	for i := range 6 {
		text := fmt.Sprintf("burst %d", i)
		send(ps[0], alice1, bob.Identity, text)
		sent = append(sent, text)
		if i == 2 {
			ps[1].kill()
			cancels[bob.InstallationId]()
		}
	}
	ps[1].start()
	cancels[bob.InstallationId] = follow(t, ps[1], bob.InstallationId, inboxes[bob.InstallationId])
	waitFor("bob to get every burst message after his restart", func() bool { return inboxes[bob.InstallationId].has(sent...) })
	send(ps[1], bob, alice1.Identity, "bob is back")
	waitFor("alice to hear from bob again", func() bool { return inboxes[alice1.InstallationId].has("bob is back") })

	time.Sleep(500 * time.Millisecond)
	for inst, in := range inboxes {
		in.mu.Lock()
		for payload, ids := range in.seen {
			slices.Sort(ids)
			if len(slices.Compact(ids)) != 1 {
				t.Errorf("%s got %q under %d different ids: a message delivered twice", inst, payload, len(ids))
			}
		}
		in.mu.Unlock()
	}
}
