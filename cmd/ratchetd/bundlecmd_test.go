package main

import (
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ratchetd/ratchetd/crypto/bundle"
	"github.com/ratchetd/ratchetd/messages"
)

func TestBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if code, _, errOut := runCmd(t, "", "bundle", "--dir", dir); code == 0 || !strings.Contains(errOut, "--create") {
		t.Fatalf("bundle of a missing directory: status %d, %s", code, errOut)
	}
	code, out, errOut := runCmd(t, "", "bundle", "--dir", dir, "--create", "--json")
	if code != 0 {
		t.Fatalf("status %d: %s", code, errOut)
	}
	var exp bundleExport
	if err := json.Unmarshal([]byte(out), &exp); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(exp.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	var b messages.Bundle
	if err := proto.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	v, err := bundle.Verify(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Entry(exp.Installation); !ok || v.Identity.String() != exp.Identity || !exp.Created {
		t.Fatalf("bundle %+v for %+v", v, exp)
	}
	// The account is there next time; the bundle string alone on stdout.
	code, out, errOut = runCmd(t, "", "bundle", "--dir", dir, "--installation", exp.Installation)
	if code != 0 || strings.TrimSpace(out) == "" || strings.Contains(out, " ") || !strings.Contains(errOut, exp.Installation) {
		t.Fatalf("status %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, _ := runCmd(t, "", "bundle", "--dir", dir, "--installation", "no-such-installation"); code == 0 {
		t.Fatalf("an unknown installation was accepted")
	}
}
