package vm

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSSHArgs(t *testing.T) {
	for _, c := range []struct {
		remote []string
		tty    bool
		want   []string
	}{
		{nil, true, []string{"ssh"}},
		{[]string{"sudo", "labctl", "status"}, true, []string{"ssh", "-c", "sudo labctl status"}},
		{[]string{"sudo", "labctl", "check", "--json"}, false, []string{"ssh", "-c", "sudo labctl check --json", "--no-tty"}},
		{LabctlArgv([]string{"answer", "oom", "it's the $(worker)"}), false,
			[]string{"ssh", "-c", `sudo labctl answer oom 'it'\''s the $(worker)'`, "--no-tty"}},
	} {
		if got := SSHArgs(c.remote, c.tty); !slices.Equal(got, c.want) {
			t.Errorf("SSHArgs(%q, %v) = %q, want %q", c.remote, c.tty, got, c.want)
		}
	}
}

func TestHasBox(t *testing.T) {
	list := "debian/bookworm64 (virtualbox, 12.20240905.1)\nlabctl/debian12  (libvirt, 0)\n"
	if !hasBox(list, "labctl/debian12", "libvirt") {
		t.Error("labctl/debian12 for libvirt not found")
	}
	if hasBox(list, "debian/bookworm64", "libvirt") {
		t.Error("a virtualbox box counted for libvirt")
	}
	if hasBox("There are no installed boxes! Use `vagrant box add` to add some.\n", "labctl/debian12", "libvirt") {
		t.Error("found a box in an empty list")
	}
}

func TestFindDir(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "labs", "memory")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Vagrantfile"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	t.Setenv(DirEnv, "")
	got, err := FindDir()
	if err != nil || got != dir {
		t.Fatalf("FindDir from %s = %q, %v; want %s", sub, got, err, dir)
	}
	t.Setenv(DirEnv, sub)
	if _, err := FindDir(); err == nil {
		t.Fatalf("$%s without a Vagrantfile accepted", DirEnv)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	tb.Write([]byte("0123456789"))
	tb.Write([]byte("ab"))
	if got := tb.String(); got != "456789ab" {
		t.Fatalf("tail = %q", got)
	}
}

func TestBoxMetadata(t *testing.T) {
	b, err := boxMetadata()
	if err != nil || string(b) != `{"format":"qcow2","provider":"libvirt","virtual_size":8}` {
		t.Fatalf("metadata.json = %s, %v", b, err)
	}
}
