package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestWithoutVMFlag(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"up", "--vm", "first-look"}, []string{"up", "first-look"}},
		{[]string{"--vm=true", "check", "--json"}, []string{"check", "--json"}},
		{[]string{"status", "--vm=1"}, []string{"status"}},
		{[]string{"down", "--vm=t", "--all"}, []string{"down", "--all"}},
		{[]string{"shell", "--vm", "--", "grep", "--vm", "x"}, []string{"shell", "--", "grep", "--vm", "x"}},
		{[]string{"answer", "--vm", "oom", "it's $(x)"}, []string{"answer", "oom", "it's $(x)"}},
	} {
		if got := withoutVMFlag(c.in); !slices.Equal(got, c.want) {
			t.Errorf("withoutVMFlag(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Every command that takes an instance has --vm, and --labs (a directory
// of this machine) is refused with it before anything runs.
func TestVMFlag(t *testing.T) {
	a := &app{}
	root := a.rootCmd()
	for _, name := range vmForwarded {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name || c.Flags().Lookup("vm") == nil {
			t.Errorf("%s has no --vm flag", name)
		}
	}
	var out, errOut bytes.Buffer
	code := run([]string{"up", "--vm", "--labs", "/tmp", "first-look"}, strings.NewReader(""), &out, &errOut)
	if code != exitUsage || !strings.Contains(errOut.String(), "--labs") {
		t.Fatalf("up --vm --labs: exit %d, stderr %q", code, errOut.String())
	}
}
