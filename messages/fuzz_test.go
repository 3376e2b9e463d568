package messages_test

import (
	"encoding/hex"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
)

// KAT-9 of status-compat.md §15: the ProtocolMessage carrying m1.
const kat9ProtocolMessage = "122430623765326631612d616161612d346262622d386363632d646464646464646464646464aa06f4010a2436663963626438362d336635622d346433652d396138652d30623163326433653466353012cb010a460a21036930f46dd0b16d866d59d1054aa63298b357499cd1862ef16f3f55f1cafceb822221023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b112460a2102407cba6352eaeb9354dc75ca26396785b27a85cfd4d58575de440902292d662a2221023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b11a393c14b0418efc07c686eb14fa0d608f63b94e031464bbffc58710aca96749e4b02622c540e70bf7bf296665d48faae8e093c0a4a1af1dc18c55"

// KAT-3 of status-compat.md §15 / status-vectors.json "kat-3": a signed Bundle.
const kat3Bundle = "0a210290999dbbf43034bffb1dd53eac1eb4c33a4ea1c4f48ba585cfde3830840f0555124f0a2431613262336334642d303030302d343030302d383030302d30303030303030303030303112270a21021ff10be221c7b140505038042f5cc86530e9851a0e6c70ee16c18268768c2e0210031801124f0a2436663963626438362d336635622d346433652d396138652d30623163326433653466353012270a21023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b110011801224146b05792e820f5c75a39e8986ac9d9abfad43c12014de9f79af50122f0287d506fa320bd2977d8e643ad2f8b044bc8743f268c24ef30a064b58f2f45bf77205501288080a8b1e39fe7cb17"

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestKAT9Decodes pins the seed: KAT-9 is a ProtocolMessage with Alice's
// installation id and one DR entry for Bob's installation.
func TestKAT9Decodes(t *testing.T) {
	var m messages.ProtocolMessage
	if err := proto.Unmarshal(mustHex(kat9ProtocolMessage), &m); err != nil {
		t.Fatal(err)
	}
	if m.GetInstallationId() != "0b7e2f1a-aaaa-4bbb-8ccc-dddddddddddd" {
		t.Errorf("installation id %q", m.GetInstallationId())
	}
	e := m.GetEncryptedMessage()["6f9cbd86-3f5b-4d3e-9a8e-0b1c2d3e4f50"]
	if e == nil || len(m.GetEncryptedMessage()) != 1 {
		t.Fatalf("encrypted_message = %v", m.GetEncryptedMessage())
	}
	if e.GetDrHeader().GetN() != 0 || len(e.GetDrHeader().GetKey()) != 33 || len(e.GetX3DhHeader().GetKey()) != 33 || len(e.GetPayload()) != 57 {
		t.Errorf("entry %v", e)
	}
	if b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(&m); err != nil || hex.EncodeToString(b) != kat9ProtocolMessage {
		t.Errorf("re-marshal differs: %x, %v", b, err)
	}
}

// FuzzProtocolMessage: whatever decodes as a ProtocolMessage re-encodes to
// something that decodes to an equal message (unknown fields included), and
// a second encoding is stable.
func FuzzProtocolMessage(f *testing.F) {
	kat9 := mustHex(kat9ProtocolMessage)
	bundleBytes := mustHex(kat3Bundle)
	f.Add(kat9)
	f.Add(bundleBytes)
	var b messages.Bundle
	if err := proto.Unmarshal(bundleBytes, &b); err != nil {
		f.Fatal(err)
	}
	var m messages.ProtocolMessage
	if err := proto.Unmarshal(kat9, &m); err != nil {
		f.Fatal(err)
	}
	m.Bundles = append(m.Bundles, &b)
	withBundle, err := proto.Marshal(&m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(withBundle)
	// A legacy field 1 (the pre-2019 single bundle), kept as unknown.
	legacy := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), bundleBytes)
	var lm messages.ProtocolMessage
	if err := proto.Unmarshal(append(legacy, kat9...), &lm); err != nil || len(lm.ProtoReflect().GetUnknown()) != len(legacy) {
		f.Fatalf("legacy field 1 is not kept as unknown: %v", err)
	}
	f.Add(append(legacy, kat9...))
	f.Add([]byte{})
	f.Add(kat9[:len(kat9)/2])

	f.Fuzz(func(t *testing.T, data []byte) {
		var m1 messages.ProtocolMessage
		if err := proto.Unmarshal(data, &m1); err != nil {
			return
		}
		enc, err := proto.Marshal(&m1)
		if err != nil {
			t.Fatalf("Marshal of a decoded message: %v", err)
		}
		var m2 messages.ProtocolMessage
		if err := proto.Unmarshal(enc, &m2); err != nil {
			t.Fatalf("Unmarshal of our own encoding: %v", err)
		}
		if !proto.Equal(&m1, &m2) {
			t.Fatalf("round trip changed the message:\n%v\n%v", &m1, &m2)
		}
		det := proto.MarshalOptions{Deterministic: true}
		d1, err := det.Marshal(&m1)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := det.Marshal(&m2)
		if err != nil {
			t.Fatal(err)
		}
		if string(d1) != string(d2) {
			t.Fatalf("deterministic encodings differ")
		}
		// The nested messages the engine reads must be reachable without
		// panicking through the generated getters.
		for _, bd := range m1.GetBundles() {
			for _, spk := range bd.GetSignedPreKeys() {
				_ = spk.GetSignedPreKey()
			}
		}
		for _, e := range m1.GetEncryptedMessage() {
			_ = e.GetDrHeader().GetKey()
			_ = e.GetX3DhHeader().GetId()
			_ = e.GetDhHeader().GetKey()
			for _, k := range e.GetHrHeader().GetKeys().GetKeys() {
				_ = k.GetKey()
			}
		}
	})
}
