package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ratchetd/ratchetd"
	"github.com/ratchetd/ratchetd/persistence"
)

// bundleExport is what `bundle --json` prints.
type bundleExport struct {
	Installation string `json:"installation"`
	Identity     string `json:"identity"`
	Created      bool   `json:"created"`
	Bundle       string `json:"bundle"`
}

func newBundleCmd() *cobra.Command {
	var (
		dir, installation, outFile string
		create, asJSON             bool
	)
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Print an installation's signed prekey bundle as a string (for a QR code)",
		Long: `bundle opens the engine's data directory and prints the current signed bundle of one
installation as a string (base64url of the Bundle protobuf): what a peer imports with
Account.ImportBundle so that its first message runs X3DH instead of the DH fallback.

The installation is --installation, or the first one (by id) in the directory. With
--create, an account is created when the directory holds none. The directory is
locked while the command runs: it fails if another ratchetd has it open.`,
		Example: `  ratchetd bundle --create            # in ./ratchetd-data
  ratchetd bundle --dir state --json
  ratchetd bundle --out bob.bundle`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exp, err := exportBundle(dir, installation, create)
			if err != nil {
				return err
			}
			if outFile != "" {
				if err := os.WriteFile(outFile, []byte(exp.Bundle+"\n"), 0o644); err != nil {
					return fmt.Errorf("bundle: %w", err)
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(exp)
			}
			what := "installation"
			if exp.Created {
				what = "new installation"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s %s, identity %s\n", what, exp.Installation, exp.Identity)
			if outFile == "" {
				fmt.Fprintln(cmd.OutOrStdout(), exp.Bundle)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", persistence.DefaultDir, "engine data directory (Badger)")
	f.StringVar(&installation, "installation", "", "installation id (default: the first in the directory)")
	f.BoolVar(&create, "create", false, "create an account when the directory holds none")
	f.StringVar(&outFile, "out", "", "write the bundle string to this file instead of standard output")
	f.BoolVar(&asJSON, "json", false, "print installation, identity and bundle as one JSON object")
	return cmd
}

func exportBundle(dir, installation string, create bool) (bundleExport, error) {
	if !create {
		// Opening would create an empty store; say so instead.
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return bundleExport{}, fmt.Errorf("bundle: %s does not exist (pass --create to make an account there)", dir)
		}
	}
	eng, err := ratchetd.Open(ratchetd.Options{Dir: dir})
	if err != nil {
		if errors.Is(err, ratchetd.ErrLocked) {
			return bundleExport{}, fmt.Errorf("bundle: %s is in use by another ratchetd process: %w", dir, err)
		}
		return bundleExport{}, fmt.Errorf("bundle: open %s: %w", dir, err)
	}
	defer eng.Close()
	exp := bundleExport{}
	var acct *ratchetd.Account
	switch {
	case installation != "":
		if acct, err = eng.Account(installation); err != nil {
			return exp, fmt.Errorf("bundle: %w", err)
		}
	default:
		accts := eng.Accounts()
		slices.SortFunc(accts, func(a, b *ratchetd.Account) int { return strings.Compare(a.InstallationID(), b.InstallationID()) })
		switch {
		case len(accts) > 0:
			acct = accts[0]
		case create:
			if acct, err = eng.CreateAccount(); err != nil {
				return exp, fmt.Errorf("bundle: create account: %w", err)
			}
			exp.Created = true
		default:
			return exp, fmt.Errorf("bundle: no account in %s (pass --create to make one)", dir)
		}
	}
	s, err := acct.ExportBundle()
	if err != nil {
		return exp, fmt.Errorf("bundle: export: %w", err)
	}
	exp.Installation, exp.Identity, exp.Bundle = acct.InstallationID(), acct.Identity().String(), s
	if err := eng.Close(); err != nil {
		return exp, fmt.Errorf("bundle: close: %w", err)
	}
	return exp, nil
}
