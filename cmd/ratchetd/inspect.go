package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/messages"
	"github.com/ratchetd/ratchetd/transport"
)

// maxInspectInput bounds what inspect reads (a Waku message is at most 1 MiB;
// its text encodings are larger).
const maxInspectInput = 4 << 20

func newInspectCmd() *cobra.Command {
	var asJSON, envelope bool
	cmd := &cobra.Command{
		Use:   "inspect [MESSAGE]",
		Short: "Decode a ProtocolMessage: installation id, bundles, per-entry headers, payload sizes",
		Long: `inspect decodes a Status ProtocolMessage given as hex (with or without 0x) or base64
(standard or URL alphabet) in the argument, or on standard input when there is no
argument or it is "-"; undecodable standard input is read as raw protobuf bytes.

It prints the sender's installation id; each attached bundle (identity, installations
with their signed prekeys and versions, timestamp, and whether the signature verifies);
and for each entry, keyed by recipient installation id or "none", its headers (X3DH
ephemeral key and prekey id, Double Ratchet key/n/pn/bundle id, DH-fallback key,
hash-ratchet header fields) and the payload length. It never prints a payload, a
hash-ratchet key or anything else secret. With --envelope the input is a ratchetd
transport envelope: its signature is checked, its sender recovered, and its payload
inspected.`,
		Example: `  ratchetd inspect 122430623765...
  ratchetd inspect --json < message.b64`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := readMessage(cmd.InOrStdin(), args)
			if err != nil {
				return err
			}
			var ins *inspection
			if envelope {
				ins, err = inspectEnvelope(raw)
			} else {
				ins, err = inspectMessage(raw)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(ins)
			}
			return ins.write(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().BoolVar(&envelope, "envelope", false, "the input is a transport Envelope around the ProtocolMessage")
	return cmd
}

// readMessage takes the argument, or standard input, and decodes it.
func readMessage(stdin io.Reader, args []string) ([]byte, error) {
	fromStdin := len(args) == 0 || args[0] == "-"
	var text []byte
	if fromStdin {
		b, err := io.ReadAll(io.LimitReader(stdin, maxInspectInput+1))
		if err != nil {
			return nil, fmt.Errorf("inspect: read standard input: %w", err)
		}
		if len(b) > maxInspectInput {
			return nil, fmt.Errorf("inspect: input larger than %d bytes", maxInspectInput)
		}
		text = b
	} else {
		text = []byte(args[0])
	}
	if raw, ok := decodeText(string(text)); ok {
		return raw, nil
	}
	if fromStdin && len(text) > 0 {
		return text, nil // raw protobuf
	}
	return nil, usageError{errors.New("inspect: the message is neither hex nor base64")}
}

// decodeText accepts hex (optionally 0x-prefixed) or any base64 alphabet,
// ignoring surrounding and embedded white space.
func decodeText(s string) ([]byte, bool) {
	s = strings.Join(strings.Fields(s), "")
	if s == "" {
		return nil, false
	}
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if b, err := hex.DecodeString(h); err == nil {
		return b, true
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

// inspection is what inspect reports; it holds public values only.
type inspection struct {
	Envelope           *envelopeInfo `json:"envelope,omitempty"`
	Bytes              int           `json:"bytes"`
	InstallationID     string        `json:"installation_id"`
	Bundles            []bundleInfo  `json:"bundles"`
	Entries            []entryInfo   `json:"entries"`
	PublicMessageBytes int           `json:"public_message_bytes,omitempty"`
	UnknownFieldsBytes int           `json:"unknown_fields_bytes,omitempty"`
}

type envelopeInfo struct {
	Topic     string `json:"topic"`
	Recipient string `json:"recipient,omitempty"`
	Sender    string `json:"sender,omitempty"` // recovered from the signature
	Verified  bool   `json:"signature_verified"`
	Error     string `json:"error,omitempty"`
}

type bundleInfo struct {
	Identity      string        `json:"identity"`
	Timestamp     int64         `json:"timestamp"`
	Verified      bool          `json:"signature_verified"`
	Error         string        `json:"error,omitempty"`
	Installations []bundleEntry `json:"installations"`
}

type bundleEntry struct {
	InstallationID  string `json:"installation_id"`
	SignedPreKey    string `json:"signed_pre_key"`
	Version         uint32 `json:"version"`
	ProtocolVersion uint32 `json:"protocol_version"`
}

type entryInfo struct {
	Installation string    `json:"installation"` // the map key: recipient installation id or "none"
	X3DH         *x3dhInfo `json:"x3dh_header,omitempty"`
	DR           *drInfo   `json:"dr_header,omitempty"`
	DH           *dhInfo   `json:"dh_header,omitempty"`
	HR           *hrInfo   `json:"hr_header,omitempty"`
	PayloadBytes int       `json:"payload_bytes"`
}

type x3dhInfo struct {
	Key string `json:"key"` // the initiator's ephemeral key
	ID  string `json:"id"`  // the responder's signed prekey used
}

type drInfo struct {
	Key string `json:"key"`
	N   uint32 `json:"n"`
	PN  uint32 `json:"pn"`
	ID  string `json:"id"` // bundle id: the responder installation's signed prekey
}

type dhInfo struct {
	Key string `json:"key"`
}

// hrInfo lists the hash-ratchet header without its keys: only how many
// there are.
type hrInfo struct {
	DeprecatedKeyID uint32 `json:"deprecated_key_id,omitempty"`
	SeqNo           uint32 `json:"seq_no"`
	GroupID         string `json:"group_id,omitempty"`
	KeyID           string `json:"key_id,omitempty"`
	Keys            int    `json:"keys,omitempty"`
	RekeyKeys       int    `json:"rekey_keys,omitempty"`
}

func inspectEnvelope(raw []byte) (*inspection, error) {
	var env messages.Envelope
	if err := proto.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("inspect: not an Envelope: %w", err)
	}
	info := &envelopeInfo{Topic: env.Topic, Recipient: hex.EncodeToString(env.Recipient)}
	if d, err := transport.Open(&env, 0); err != nil {
		info.Error = err.Error()
	} else {
		info.Verified, info.Sender = true, d.Sender.String()
	}
	ins, err := inspectMessage(env.Payload)
	if err != nil {
		return nil, err
	}
	ins.Envelope = info
	return ins, nil
}

func inspectMessage(raw []byte) (*inspection, error) {
	var pm messages.ProtocolMessage
	if err := proto.Unmarshal(raw, &pm); err != nil {
		return nil, fmt.Errorf("inspect: not a ProtocolMessage: %w", err)
	}
	ins := &inspection{
		Bytes: len(raw), InstallationID: pm.InstallationId, PublicMessageBytes: len(pm.PublicMessage),
		UnknownFieldsBytes: len(pm.ProtoReflect().GetUnknown()),
		Bundles:            []bundleInfo{}, Entries: []entryInfo{},
	}
	if pm.InstallationId == "" && len(pm.Bundles) == 0 && len(pm.EncryptedMessage) == 0 && len(pm.PublicMessage) == 0 {
		return nil, errors.New("inspect: not a ProtocolMessage (no installation id, bundle, entry or public message)")
	}
	for _, b := range pm.Bundles {
		ins.Bundles = append(ins.Bundles, describeBundle(b))
	}
	ids := make([]string, 0, len(pm.EncryptedMessage))
	for id := range pm.EncryptedMessage {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		ins.Entries = append(ins.Entries, describeEntry(id, pm.EncryptedMessage[id]))
	}
	return ins, nil
}

func describeBundle(b *messages.Bundle) bundleInfo {
	info := bundleInfo{Identity: hex.EncodeToString(b.GetIdentity()), Timestamp: b.GetTimestamp(), Installations: []bundleEntry{}}
	if _, err := bundle.Verify(b); err != nil {
		info.Error = err.Error()
	} else {
		info.Verified = true
	}
	ids := make([]string, 0, len(b.GetSignedPreKeys()))
	for id := range b.GetSignedPreKeys() {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		spk := b.GetSignedPreKeys()[id]
		info.Installations = append(info.Installations, bundleEntry{
			InstallationID: id, SignedPreKey: hex.EncodeToString(spk.GetSignedPreKey()),
			Version: spk.GetVersion(), ProtocolVersion: spk.GetProtocolVersion(),
		})
	}
	return info
}

func describeEntry(id string, e *messages.EncryptedMessageProtocol) entryInfo {
	info := entryInfo{Installation: id, PayloadBytes: len(e.GetPayload())}
	if h := e.GetX3DhHeader(); h != nil {
		info.X3DH = &x3dhInfo{Key: hex.EncodeToString(h.GetKey()), ID: hex.EncodeToString(h.GetId())}
	}
	if h := e.GetDrHeader(); h != nil {
		info.DR = &drInfo{Key: hex.EncodeToString(h.GetKey()), N: h.GetN(), PN: h.GetPn(), ID: hex.EncodeToString(h.GetId())}
	}
	if h := e.GetDhHeader(); h != nil {
		info.DH = &dhInfo{Key: hex.EncodeToString(h.GetKey())}
	}
	if h := e.GetHrHeader(); h != nil {
		info.HR = &hrInfo{
			DeprecatedKeyID: h.GetDeprecatedKeyId(), SeqNo: h.GetSeqNo(),
			GroupID: hex.EncodeToString(h.GetGroupId()), KeyID: hex.EncodeToString(h.GetKeyId()),
			Keys: len(h.GetKeys().GetKeys()), RekeyKeys: len(h.GetKeys().GetRekeyGroup().GetKeys()),
		}
	}
	return info
}

// write prints the inspection for a person.
func (ins *inspection) write(w io.Writer) error {
	p := func(f string, a ...any) { fmt.Fprintf(w, f+"\n", a...) }
	if e := ins.Envelope; e != nil {
		p("envelope:")
		p("  topic:      %s", e.Topic)
		p("  recipient:  %s", orNone(e.Recipient))
		if e.Verified {
			p("  sender:     %s (signature verified)", e.Sender)
		} else {
			p("  signature:  does not verify: %s", e.Error)
		}
	}
	p("protocol message: %d bytes", ins.Bytes)
	p("installation id:  %s", orNone(ins.InstallationID))
	p("bundles:          %d", len(ins.Bundles))
	for i, b := range ins.Bundles {
		p("  bundle %d:", i+1)
		p("    identity:   %s", b.Identity)
		p("    timestamp:  %d (%s)", b.Timestamp, time.Unix(0, b.Timestamp).UTC().Format(time.RFC3339Nano))
		if b.Verified {
			p("    signature:  verifies")
		} else {
			p("    signature:  does not verify: %s", b.Error)
		}
		for _, e := range b.Installations {
			p("    installation %s: signed prekey %s, version %d, protocol version %d", e.InstallationID, e.SignedPreKey, e.Version, e.ProtocolVersion)
		}
	}
	p("entries:          %d", len(ins.Entries))
	for _, e := range ins.Entries {
		p("  entry for %s:", e.Installation)
		if h := e.X3DH; h != nil {
			p("    x3dh header:  key %s, id %s", h.Key, h.ID)
		}
		if h := e.DR; h != nil {
			p("    dr header:    key %s, n %d, pn %d, id %s", h.Key, h.N, h.PN, h.ID)
		}
		if h := e.DH; h != nil {
			p("    dh header:    key %s", h.Key)
		}
		if h := e.HR; h != nil {
			p("    hr header:    seq_no %d, group_id %s, key_id %s, deprecated_key_id %d, %d keys, %d rekey keys (not shown)",
				h.SeqNo, orNone(h.GroupID), orNone(h.KeyID), h.DeprecatedKeyID, h.Keys, h.RekeyKeys)
		}
		p("    payload:      %d bytes", e.PayloadBytes)
	}
	if ins.PublicMessageBytes > 0 {
		p("public message:   %d bytes (cleartext, not shown)", ins.PublicMessageBytes)
	}
	if ins.UnknownFieldsBytes > 0 {
		p("unknown fields:   %d bytes (e.g. the pre-2019 single bundle, field 1)", ins.UnknownFieldsBytes)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
