package main

import (
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/ratchetd/ratchetd/crypto/keys"
)

func TestKeygenJSON(t *testing.T) {
	code, out, _ := runCmd(t, "", "keygen", "--json")
	if code != 0 {
		t.Fatalf("status %d", code)
	}
	var info identityInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	raw, err := hex.DecodeString(info.PrivateKey)
	if err != nil || len(raw) != 32 {
		t.Fatalf("private key %q", info.PrivateKey)
	}
	sk, err := keys.ParsePrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sk.Public()
	if err != nil {
		t.Fatal(err)
	}
	if info.PublicKey != hex.EncodeToString(pub[:]) || !regexp.MustCompile(`^0[23][0-9a-f]{64}$`).MatchString(info.PublicKey) {
		t.Fatalf("public key %q does not match the private key", info.PublicKey)
	}
	if !regexp.MustCompile(`^0x04[0-9a-f]{128}$`).MatchString(info.ChatKey) || info.ContactCodeTopic != info.ChatKey+"-contact-code" {
		t.Fatalf("chat key %q, contact code topic %q", info.ChatKey, info.ContactCodeTopic)
	}
	if !regexp.MustCompile(`^contact-discovery-\d{1,4}$`).MatchString(info.PartitionedTopic) {
		t.Fatalf("partitioned topic %q", info.PartitionedTopic)
	}
}

// The text form has one labelled line per value; the private key is
// there (printing it is the command's job) with a warning on stderr.
func TestKeygenText(t *testing.T) {
	code, out, errOut := runCmd(t, "", "keygen")
	if code != 0 {
		t.Fatalf("status %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"private key:", "public key:", "chat key:", "contact code topic:", "partitioned topic:"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]) {
			t.Errorf("line %d = %q, want prefix %q", i, l, want[i])
		}
	}
	if !regexp.MustCompile(`private key:\s+[0-9a-f]{64}\n`).MatchString(out) || !strings.Contains(errOut, "secret") {
		t.Fatalf("output %q, stderr %q", out, errOut)
	}
}
