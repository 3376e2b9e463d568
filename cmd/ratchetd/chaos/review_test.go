package chaos

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/ratchetd/ratchetd/transport"
)

// TestReviewChildFailureCountedAsKill: Run sends SIGKILL after the sleep and
// counts a kill whenever Signal succeeds, and ignores cmd.Wait's status. A
// child that failed on its own (here: it exits 1 at once, as a child that
// panicked, could not open the store or failed an Ack would) is counted as a
// kill and the verdict stays OK: a crash of the engine under test is
// reported as a successful SIGKILL run.
func TestReviewChildFailureCountedAsKill(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const seed = 1
	res, err := Run(Options{
		Dir: t.TempDir(), Runs: 2, Seed: seed,
		MinRun: 300 * time.Millisecond, MaxRun: 400 * time.Millisecond, Drain: time.Second,
		Child: func(args ...string) *exec.Cmd {
			if slices.Contains(args, "--seed") && args[len(args)-1] == "2" { // the first killed run
				args = []string{"--no-such-flag"} // the child fails at once with status 1
			}
			c := exec.Command(exe, args...)
			c.Env = append(os.Environ(), "RATCHETD_CHAOS_CHILD=1")
			return c
		},
	})
	t.Logf("result %+v, err %v", res, err)
	if err == nil && res.Kills == 2 && res.OK() {
		t.Fatalf("a child that exited with an error before any kill was counted as a SIGKILL run, and the run passed: %+v", res)
	}
}

// TestReviewSpoolIsNotAConfirmer: the engine takes the confirming outbox
// path (outbox first, PublishConfirm, delete on confirmation, retry) only
// with a transport.Confirmer, which is what the networked transport and
// `serve` use. The crash harness's spool is not one, so 200 SIGKILLs never
// exercise that path: publish-then-outbox-only-on-failure is what it proves.
func TestReviewSpoolIsNotAConfirmer(t *testing.T) {
	var tr transport.Transport = &spool{}
	if _, ok := tr.(transport.Confirmer); !ok {
		t.Fatal("the crash harness's transport is not a Confirmer: the networked outbox path (kept until confirmed) is never killed")
	}
}
