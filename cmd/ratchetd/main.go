// Command ratchetd is the command-line front of the engine. Until the engine
// lands (issue 3) and the command grows its subcommands (issue 5), its one
// job is `ratchetd selftest`: a Status-compatible X3DH and Double Ratchet
// conversation between two in-process parties, checked end to end.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "selftest" {
		fmt.Fprintln(os.Stderr, "usage: ratchetd selftest")
		os.Exit(2)
	}
	if err := selftest(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ratchetd:", err)
		os.Exit(1)
	}
}
