package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClassify reads output vagrant really printed on this kind of machine
// (testdata/*.txt, captured from failing commands) and checks each maps to
// its cause and what to do.
func TestClassify(t *testing.T) {
	for file, want := range map[string]struct {
		msg string
		env bool
		ssh bool // also recognised from `vagrant ssh`
	}{
		"up-libvirtd-down.txt": {"libvirtd is not running", true, true},
		"up-no-virtualbox.txt": {"VirtualBox is not installed", true, false},
		"ssh-not-created.txt":  {"the VM does not exist", false, true},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		got := Classify(string(data))
		if want.msg == "" {
			if got != nil {
				t.Errorf("%s: classified as %q, want nothing", file, got.Msg)
			}
			continue
		}
		if got == nil {
			t.Errorf("%s: not classified, want %q", file, want.msg)
			continue
		}
		if got.Msg != want.msg || got.Env != want.env || got.Hint == "" {
			t.Errorf("%s: got %+v, want msg %q env %v and a hint", file, *got, want.msg, want.env)
		}
		if gotSSH := ClassifySSH(string(data)); (gotSSH != nil) != want.ssh {
			t.Errorf("%s: ClassifySSH = %v, want recognised %v", file, gotSSH, want.ssh)
		}
	}
}

// A remote command's own output must not be taken for Vagrant's trouble.
func TestClassifySSHIgnoresLabOutput(t *testing.T) {
	out := "curl: (6) Could not resolve host: api.internal\nBox 'x' could not be found\n"
	if e := ClassifySSH(out); e != nil {
		t.Fatalf("lab output classified as %q", e.Msg)
	}
	if e := Classify(out); e == nil || !strings.Contains(e.Hint, "make box") {
		t.Fatalf("vagrant up output not classified as a missing box: %v", e)
	}
}
