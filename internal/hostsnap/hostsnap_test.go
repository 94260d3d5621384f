package hostsnap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfoUnescapes(t *testing.T) {
	line := `36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
	m, ok := parseMountinfo(line)
	if !ok || m.Point != "/mnt/with space" || m.FSType != "ext3" || m.Source != "/dev/root" {
		t.Fatalf("parseMountinfo = %+v, %v", m, ok)
	}
	if _, ok := parseMountinfo("garbage"); ok {
		t.Fatal("a malformed line parsed")
	}
}

func TestTakeIsStableAndSeesNewMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs to prove the snapshot sees it")
	}
	a, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Mounts) == 0 || len(a.Links) == 0 || len(a.Files) != len(watchedFiles) {
		t.Fatalf("snapshot is missing parts: %d mounts, %d links, %d files", len(a.Mounts), len(a.Links), len(a.Files))
	}
	dir := t.TempDir()
	if err := unix.Mount("hostsnap-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	b, err := Take()
	unix.Unmount(dir, unix.MNT_DETACH)
	if err != nil {
		t.Fatal(err)
	}
	d := Diff(Filter(a, notOtherTests), Filter(b, notOtherTests))
	if !strings.Contains(d, "hostsnap-test") {
		t.Fatalf("a new tmpfs at %s is not in the diff:\n%s", dir, d)
	}
	c, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(Filter(a, notOtherTests), Filter(c, notOtherTests)); d != "" {
		t.Fatalf("snapshot differs with nothing changed:\n%s", d)
	}
}

func TestCgroupsUnderLabctlAreSeen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a cgroup under /labctl")
	}
	root := "/sys/fs/cgroup/pids/labctl"
	if _, err := os.Stat(filepath.Dir(root)); err != nil {
		t.Skip("no v1 pids hierarchy on this machine")
	}
	made := os.Mkdir(root, 0o755) == nil
	dir := filepath.Join(root, "hostsnaptest")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Take()
	os.Remove(dir)
	if made {
		os.Remove(root)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := "/sys/fs/cgroup/pids:/labctl/hostsnaptest"
	for _, c := range s.Cgroups {
		if c == want {
			return
		}
	}
	t.Fatalf("cgroup %s not in %v", want, s.Cgroups)
}

// notOtherTests drops entries of labs other tests run meanwhile.
func notOtherTests(entry string) bool {
	return !strings.Contains(entry, "labctl") && !strings.Contains(entry, ".test")
}

// nspawn's per-machine entries and image locks are seen (and named by
// Mentioning), while its shared top-level directories, which may predate
// any lab, are not: removing an empty one changes nothing.
func TestNspawnEntries(t *testing.T) {
	root := t.TempDir()
	old := nspawnRunDir
	nspawnRunDir = root
	t.Cleanup(func() { nspawnRunDir = old })
	mkdir := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	take := func() *Snapshot {
		t.Helper()
		s := &Snapshot{}
		if err := takeNspawn(s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	mkdir("propagate")
	mkdir("locks")
	// A machine that is not a lab's, running before and after.
	mkdir("propagate/other-machine")
	empty := take()
	if want := []string{"propagate/other-machine/"}; !equal(empty.Nspawn, want) {
		t.Fatalf("Nspawn = %q, want %q", empty.Nspawn, want)
	}

	mkdir("propagate/labctl-abc123-app/incoming")
	if err := os.WriteFile(filepath.Join(root, "locks", "inode-65024:753966"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	running := take()
	want := []string{"locks/inode-65024:753966", "propagate/labctl-abc123-app/", "propagate/other-machine/"}
	if !equal(running.Nspawn, want) {
		t.Fatalf("while a lab runs Nspawn = %q, want %q", running.Nspawn, want)
	}
	if got := running.Mentioning("abc123"); !equal(got, []string{"nspawn propagate/labctl-abc123-app/"}) {
		t.Errorf("Mentioning(abc123) = %q", got)
	}
	if d := Diff(empty, running); !strings.Contains(d, "labctl-abc123-app") || !strings.Contains(d, "inode-65024") {
		t.Errorf("the lab's entries are not in the diff:\n%s", d)
	}

	// The lab is gone and so are the empty shared directories (labctl
	// removes them when it was the last user): nothing differs.
	for _, p := range []string{"propagate/labctl-abc123-app", "locks/inode-65024:753966"} {
		if err := os.RemoveAll(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(root, "locks")); err != nil {
		t.Fatal(err)
	}
	if d := Diff(empty, take()); d != "" {
		t.Errorf("after the lab left (-before +after):\n%s", d)
	}
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if s := take(); len(s.Nspawn) != 0 {
		t.Errorf("without the directory Nspawn = %q", s.Nspawn)
	}
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n") && len(a) == len(b)
}
