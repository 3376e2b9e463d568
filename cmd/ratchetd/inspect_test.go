package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/messages"
)

// KAT-9 of status-compat.md §15: the ProtocolMessage of Alice's first
// message m1 to Bob (X3DH and DR headers, no bundle).
const kat9 = "122430623765326631612d616161612d346262622d386363632d646464646464646464646464aa06f4010a2436663963626438362d336635622d346433652d396138652d30623163326433653466353012cb010a460a21036930f46dd0b16d866d59d1054aa63298b357499cd1862ef16f3f55f1cafceb822221023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b112460a2102407cba6352eaeb9354dc75ca26396785b27a85cfd4d58575de440902292d662a2221023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b11a393c14b0418efc07c686eb14fa0d608f63b94e031464bbffc58710aca96749e4b02622c540e70bf7bf296665d48faae8e093c0a4a1af1dc18c55"

// KAT-3: Bob's bundle with two installations, signed.
const kat3Bundle = "0a210290999dbbf43034bffb1dd53eac1eb4c33a4ea1c4f48ba585cfde3830840f0555124f0a2431613262336334642d303030302d343030302d383030302d30303030303030303030303112270a21021ff10be221c7b140505038042f5cc86530e9851a0e6c70ee16c18268768c2e0210031801124f0a2436663963626438362d336635622d346433652d396138652d30623163326433653466353012270a21023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b110011801224146b05792e820f5c75a39e8986ac9d9abfad43c12014de9f79af50122f0287d506fa320bd2977d8e643ad2f8b044bc8743f268c24ef30a064b58f2f45bf77205501288080a8b1e39fe7cb17"

const (
	aliceInstallation = "0b7e2f1a-aaaa-4bbb-8ccc-dddddddddddd"
	bobInstallation   = "6f9cbd86-3f5b-4d3e-9a8e-0b1c2d3e4f50"
	aliceEK           = "036930f46dd0b16d866d59d1054aa63298b357499cd1862ef16f3f55f1cafceb82"
	bobSPK            = "023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b1"
	aliceRatchetKey   = "02407cba6352eaeb9354dc75ca26396785b27a85cfd4d58575de440902292d662a"
)

func inspectJSON(t *testing.T, stdin string, args ...string) inspection {
	t.Helper()
	code, out, errOut := runCmd(t, stdin, append([]string{"inspect", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	var ins inspection
	if err := json.Unmarshal([]byte(out), &ins); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return ins
}

func TestInspectKAT9(t *testing.T) {
	ins := inspectJSON(t, "", kat9)
	if ins.InstallationID != aliceInstallation || len(ins.Bundles) != 0 || len(ins.Entries) != 1 {
		t.Fatalf("%+v", ins)
	}
	e := ins.Entries[0]
	if e.Installation != bobInstallation || e.X3DH == nil || e.DR == nil || e.DH != nil || e.HR != nil {
		t.Fatalf("entry %+v", e)
	}
	if e.X3DH.Key != aliceEK || e.X3DH.ID != bobSPK {
		t.Errorf("x3dh header %+v", e.X3DH)
	}
	if e.DR.Key != aliceRatchetKey || e.DR.N != 0 || e.DR.PN != 0 || e.DR.ID != bobSPK {
		t.Errorf("dr header %+v", e.DR)
	}
	// 16-byte IV ‖ "hello bob" ‖ 32-byte tag.
	if e.PayloadBytes != 16+9+32 {
		t.Errorf("payload %d bytes", e.PayloadBytes)
	}

	// The same message as text, from base64 on standard input.
	raw, _ := hex.DecodeString(kat9)
	code, out, _ := runCmd(t, base64.StdEncoding.EncodeToString(raw)+"\n", "inspect")
	if code != 0 {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{
		"installation id:  " + aliceInstallation,
		"entry for " + bobInstallation,
		"x3dh header:  key " + aliceEK + ", id " + bobSPK,
		"dr header:    key " + aliceRatchetKey + ", n 0, pn 0, id " + bobSPK,
		"payload:      57 bytes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The ciphertext is never printed.
	if strings.Contains(out, "3c14b0418efc") {
		t.Errorf("payload bytes printed:\n%s", out)
	}
}

// An attached bundle is listed with its installations and whether its
// signature verifies; one flipped bit of the signature is caught.
func TestInspectBundle(t *testing.T) {
	raw, _ := hex.DecodeString(kat3Bundle)
	var b messages.Bundle
	if err := proto.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	bad := proto.Clone(&b).(*messages.Bundle)
	bad.Signature[5] ^= 1
	pm, err := proto.Marshal(&messages.ProtocolMessage{InstallationId: bobInstallation, Bundles: []*messages.Bundle{&b, bad}})
	if err != nil {
		t.Fatal(err)
	}
	ins := inspectJSON(t, "", "0x"+hex.EncodeToString(pm))
	if len(ins.Bundles) != 2 || len(ins.Entries) != 0 {
		t.Fatalf("%+v", ins)
	}
	good := ins.Bundles[0]
	if !good.Verified || good.Timestamp != 1700000000000000000 || good.Identity != "0290999dbbf43034bffb1dd53eac1eb4c33a4ea1c4f48ba585cfde3830840f0555" {
		t.Fatalf("bundle %+v", good)
	}
	if len(good.Installations) != 2 || good.Installations[0].Version != 3 || good.Installations[1].InstallationID != bobInstallation ||
		good.Installations[1].SignedPreKey != bobSPK || good.Installations[1].Version != 1 || good.Installations[1].ProtocolVersion != 1 {
		t.Fatalf("installations %+v", good.Installations)
	}
	if ins.Bundles[1].Verified || ins.Bundles[1].Error == "" {
		t.Fatalf("tampered bundle reported as verified: %+v", ins.Bundles[1])
	}
}

func TestInspectRejects(t *testing.T) {
	for _, in := range []string{"not hex or base64 !!", "00"} {
		if code, _, _ := runCmd(t, "", "inspect", in); code == 0 {
			t.Errorf("inspect %q succeeded", in)
		}
	}
}
