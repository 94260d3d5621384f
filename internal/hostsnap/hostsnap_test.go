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
