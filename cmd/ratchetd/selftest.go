package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/crypto/dhfallback"
	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/crypto/ratchet"
	"github.com/ratchetd/ratchetd/crypto/x3dh"
	"github.com/ratchetd/ratchetd/messages"
)

func newSelftestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "selftest",
		Short: "Run a Status-compatible X3DH and Double Ratchet conversation through the crypto layer",
		Long: `selftest checks the crypto layer end to end with no engine: Bob signs a bundle, Alice
verifies it and runs X3DH, both exchange ratchet messages out of order, a duplicate is
refused, and a DH-fallback message is opened.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return selftest(cmd.OutOrStdout()) },
	}
}

// selftest runs a short conversation through the wire format: Bob publishes a
// signed bundle, Alice verifies it and runs X3DH, both exchange ratchet
// messages out of order, and a DH-fallback message is opened.
func selftest(out io.Writer) error {
	now := time.Now().UnixNano()
	alice, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	bob, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	spk, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	const bobInstallation = "6f9cbd86-3f5b-4d3e-9a8e-0b1c2d3e4f50"
	signed, err := bundle.Sign(bob, []bundle.Entry{{InstallationID: bobInstallation, SignedPreKey: spk.Public, Version: 1, ProtocolVersion: bundle.ProtocolVersion}}, now)
	if err != nil {
		return err
	}
	wire, err := proto.Marshal(signed.Proto())
	if err != nil {
		return err
	}
	var received messages.Bundle
	if err := proto.Unmarshal(wire, &received); err != nil {
		return err
	}
	verified, err := bundle.Verify(&received)
	if err != nil {
		return err
	}
	entry, _ := verified.Entry(bobInstallation)
	fmt.Fprintf(out, "bundle: %d bytes, identity %s, verified\n", len(wire), verified.Identity)

	ini, err := x3dh.Initiate(rand.Reader, alice.Private, verified.Identity, entry.SignedPreKey)
	if err != nil {
		return err
	}
	st, err := ratchet.NewInitiator(ratchet.RootKey(ini.SK), entry.SignedPreKey, rand.Reader)
	if err != nil {
		return err
	}
	a := &ratchet.Session{State: st}
	var sent [][2]any
	for _, text := range []string{"hello bob", "second", "third"} {
		h, ct, err := a.Encrypt([]byte(text))
		if err != nil {
			return err
		}
		sent = append(sent, [2]any{h, ct})
	}
	sk, err := x3dh.Passive(bob.Private, spk.Private, alice.Public, ini.Ephemeral)
	if err != nil {
		return err
	}
	b := &ratchet.Session{State: ratchet.NewResponder(ratchet.RootKey(sk), spk)}
	for _, i := range []int{2, 0, 1} { // out of order
		r, _, err := b.Decrypt(sent[i][0].(ratchet.Header), sent[i][1].([]byte), rand.Reader)
		if err != nil {
			return fmt.Errorf("bob decrypt #%d: %w", i, err)
		}
		fmt.Fprintf(out, "bob   <- %q (n=%d)\n", r.Plaintext, i)
	}
	if _, _, err := b.Decrypt(sent[0][0].(ratchet.Header), sent[0][1].([]byte), rand.Reader); err == nil {
		return fmt.Errorf("a duplicate decrypted twice")
	}
	fmt.Fprintln(out, "bob   duplicate of n=0 refused")
	h, ct, err := b.Encrypt([]byte("hi alice"))
	if err != nil {
		return err
	}
	r, _, err := a.Decrypt(h, ct, rand.Reader)
	if err != nil {
		return fmt.Errorf("alice decrypt: %w", err)
	}
	fmt.Fprintf(out, "alice <- %q (after a DH ratchet step)\n", r.Plaintext)

	ek, payload, err := dhfallback.Seal(rand.Reader, bob.Public, []byte("no bundle yet"))
	if err != nil {
		return err
	}
	pt, err := dhfallback.Open(bob.Private, ek, payload)
	if err != nil {
		return err
	}
	if !bytes.Equal(pt, []byte("no bundle yet")) {
		return fmt.Errorf("dh fallback: wrong plaintext")
	}
	fmt.Fprintf(out, "bob   <- %q (DH fallback)\n", pt)
	fmt.Fprintln(out, "selftest: ok")
	return nil
}
