package labtest

import (
	"os"
	"testing"
)

func TestCondition(t *testing.T) {
	root, err := Condition("root")
	if err != nil || root != (os.Geteuid() == 0) {
		t.Errorf("Condition(root) = %v, %v; euid %d", root, err, os.Geteuid())
	}
	// Exactly one layout holds the memory controller on a machine that has one.
	v1, err1 := Condition("cgroup1")
	v2, err2 := Condition("cgroup2")
	if err1 != nil || err2 != nil {
		t.Fatalf("cgroup conditions: %v, %v", err1, err2)
	}
	if _, err := os.Stat("/proc/self/cgroup"); err == nil && v1 && v2 {
		t.Errorf("memory controller reported on both v1 and v2")
	}
	for _, c := range []string{"netns", "systemd", "vm"} {
		if _, err := Condition(c); err != nil {
			t.Errorf("Condition(%s): %v", c, err)
		}
	}
	if _, err := Condition("bogus"); err == nil {
		t.Error("Condition(bogus) = nil error, want one naming the known conditions")
	}
}

func TestFlagValue(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lab", "--name", "a"}, "a"},
		{[]string{"lab", "--name=b"}, "b"},
		{[]string{"lab", "--name"}, ""},
		{[]string{"lab"}, ""},
	} {
		if got := flagValue(tc.args, "--name"); got != tc.want {
			t.Errorf("flagValue(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
