// Command ratchetd is the command-line front of the engine:
//
//	ratchetd demo      a scripted multi-device conversation on the embedded default, with a transcript
//	ratchetd bench     the load generator (burst, pingpong, x3dh, fanout, sessions)
//	ratchetd chaos     the crash harness: SIGKILLs of a two-sided conversation, then verification
//	ratchetd serve     a node: networked transport and the gRPC API for bots in any language
//	ratchetd keygen    a new identity key pair
//	ratchetd bundle    an installation's bundle string, for a QR code
//	ratchetd inspect   decode a ProtocolMessage (headers, bundles), never secrets
//	ratchetd selftest  the crypto layer end to end, no engine
//
// Every subcommand has --help.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError ends the command with a status, its message already printed
// (the demo reports what was not delivered before it fails).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// run executes the command line and returns the exit status: 0, 1 for an
// error, 2 for a usage error.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var ex *exitError
	if errors.As(err, &ex) {
		if ex.msg != "" {
			fmt.Fprintln(stderr, "ratchetd:", ex.msg)
		}
		return ex.code
	}
	fmt.Fprintln(stderr, "ratchetd:", err)
	if cmd != nil && isUsageError(err) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return 2
	}
	return 1
}

// usageError marks a bad command line (flags, arguments).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ratchetd",
		Short: "Status-compatible secure transport engine: demo, load generator and tools",
		Long: `ratchetd speaks Status's secure transport (X3DH over secp256k1, the Double Ratchet,
multi-device bundles) at high volume. This command runs a scripted demo of the engine,
its load generator, and small tools for keys, bundles and wire messages.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDemoCmd(), newBenchCmd(), newChaosCmd(), newChaosChildCmd(), newServeCmd(),
		newKeygenCmd(), newBundleCmd(), newInspectCmd(), newSelftestCmd())
	return root
}

// noArgs and maxArgs check positional arguments; a violation is a usage
// error (status 2).
func noArgs(cmd *cobra.Command, args []string) error { return maxArgs(0)(cmd, args) }

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usageError{fmt.Errorf("%s takes at most %d argument(s), got %d", cmd.CommandPath(), n, len(args))}
		}
		return nil
	}
}
