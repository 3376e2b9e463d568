package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ratchetd/ratchetd/crypto/keys"
	"github.com/ratchetd/ratchetd/transport"
)

// identityInfo is what keygen prints about a key pair.
type identityInfo struct {
	PrivateKey       string `json:"private_key"`        // 32-byte scalar, hex
	PublicKey        string `json:"public_key"`         // compressed, 33 bytes, hex
	ChatKey          string `json:"chat_key"`           // uncompressed with 0x, as Status shows it
	ContactCodeTopic string `json:"contact_code_topic"` // where the identity publishes its bundle
	PartitionedTopic string `json:"partitioned_topic"`  // where it receives 1:1 messages
}

func newKeygenCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Print a new secp256k1 identity key pair and its topics",
		Long: `keygen draws a new identity key from the system's random source and prints the
private key (hex), the compressed public key (hex), the chat key as Status shows it
(0x04… uncompressed), the contact-code topic where the identity's bundle is published
and the partitioned topic where it receives 1:1 messages.

The private key is printed on standard output: keep it secret. Use it with the
embedding API (Engine.AddInstallation) to host devices of this identity.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kp, err := keys.GenerateKey(rand.Reader)
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			info, err := describeIdentity(kp)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "private key:\t%s\n", info.PrivateKey)
			fmt.Fprintf(tw, "public key:\t%s\n", info.PublicKey)
			fmt.Fprintf(tw, "chat key:\t%s\n", info.ChatKey)
			fmt.Fprintf(tw, "contact code topic:\t%s\n", info.ContactCodeTopic)
			fmt.Fprintf(tw, "partitioned topic:\t%s\n", info.PartitionedTopic)
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "keep the private key secret: it is the identity.")
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func describeIdentity(kp keys.KeyPair) (identityInfo, error) {
	u, err := kp.Public.Uncompressed()
	if err != nil {
		return identityInfo{}, fmt.Errorf("keygen: %w", err)
	}
	return identityInfo{
		// keys.PrivateKey never prints itself; the bytes are hex-encoded
		// here on purpose, since printing the key is this command's job.
		PrivateKey:       hex.EncodeToString(kp.Private[:]),
		PublicKey:        hex.EncodeToString(kp.Public[:]),
		ChatKey:          "0x" + hex.EncodeToString(u[:]),
		ContactCodeTopic: transport.ContactCodeTopic(kp.Public),
		PartitionedTopic: transport.PartitionedTopic(kp.Public),
	}, nil
}
