package main

import (
	"bytes"
	"strings"
	"testing"
)

// runCmd runs the command line in-process.
func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// Every subcommand has help.
func TestHelp(t *testing.T) {
	for _, sub := range []string{"", "demo", "bench", "keygen", "bundle", "inspect", "selftest"} {
		args := []string{"--help"}
		if sub != "" {
			args = []string{sub, "--help"}
		}
		code, out, _ := runCmd(t, "", args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help: status %d, output %q", sub, code, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--no-such-flag"},
		{"keygen", "extra"},
		{"bench", "burst", "--scenario", "x3dh"},
	} {
		if code, _, errOut := runCmd(t, "", args...); code != 2 || !strings.Contains(errOut, "--help") {
			t.Errorf("%q: status %d, stderr %q; want 2 and a pointer to --help", args, code, errOut)
		}
	}
	if code, _, _ := runCmd(t, "", "no-such-command"); code == 0 {
		t.Errorf("an unknown command succeeded")
	}
}

func TestSelftest(t *testing.T) {
	code, out, errOut := runCmd(t, "", "selftest")
	if code != 0 || !strings.Contains(out, "selftest: ok") {
		t.Fatalf("status %d\n%s%s", code, out, errOut)
	}
}

// histogram writes an engine histogram (per-bucket counts, the last above
// every bound) as Prometheus's cumulative text form.
func TestHistogramText(t *testing.T) {
	var b strings.Builder
	histogram(&b, "x", []int64{1, 0, 2, 3}, []float64{0.5, 1, 2}, 9.5)
	want := "# TYPE x histogram\n" +
		"x_bucket{le=\"0.5\"} 1\nx_bucket{le=\"1\"} 1\nx_bucket{le=\"2\"} 3\nx_bucket{le=\"+Inf\"} 6\n" +
		"x_sum 9.5\nx_count 6\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
