package vm

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// quoteCases are the words a learner or a lab can put on a command line,
// and the ones that break naive quoting.
var quoteCases = []string{
	"", "plain", "two words", "it's", "'", "''", `"double"`, `back\slash`, "$HOME", "$(id)", "`id`",
	"a;b", "a&&b", "a|b", "x > /tmp/f", "*", "?", "[a]", "~", "~root", "#comment", "tab\there",
	"new\nline", "FOO=bar", "-n", "--", "é ü 中", "!event", "{a,b}", "%s", "a\\'b",
}

// TestJoinRoundTrip runs the quoted command through a real sh: the
// arguments printf sees are exactly the ones given.
func TestJoinRoundTrip(t *testing.T) {
	argv := append([]string{"printf", `%s\0`}, quoteCases...)
	out, err := exec.Command("sh", "-c", Join(argv)).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", Join(argv), err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !slices.Equal(got, quoteCases) {
		t.Fatalf("round trip through sh -c:\n got %q\nwant %q", got, quoteCases)
	}
}

// TestJoinRoundTripVagrant goes through both shells of `vagrant ssh -c`:
// Vagrant wraps the command as bash -l -c '<command, ' escaped>' and the
// remote login shell runs that.
func TestJoinRoundTripVagrant(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	argv := append([]string{"printf", `%s\0`}, quoteCases...)
	inner := Join(argv)
	// Vagrant's ShellQuote.escape(cmd, "'"): ' becomes '"'"'.
	wrapped := "bash -c '" + strings.ReplaceAll(inner, "'", `'"'"'`) + "'"
	out, err := exec.Command("sh", "-c", wrapped).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", wrapped, err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !slices.Equal(got, quoteCases) {
		t.Fatalf("round trip through vagrant's wrapping:\n got %q\nwant %q", got, quoteCases)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"labctl":       "labctl",
		"--json":       "--json",
		"/proc/self":   "/proc/self",
		"":             "''",
		"it's":         `'it'\''s'`,
		"a b":          "'a b'",
		"FOO=bar":      "'FOO=bar'",
		"$(reboot)":    "'$(reboot)'",
		"x;rm -rf /":   "'x;rm -rf /'",
		"first-look.1": "first-look.1",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzJoinRoundTrip(f *testing.F) {
	for _, c := range quoteCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsRune(s, 0) {
			t.Skip("argv cannot hold NUL")
		}
		out, err := exec.Command("sh", "-c", Join([]string{"printf", "%s", s})).Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != s {
			t.Fatalf("got %q, want %q", out, s)
		}
	})
}
