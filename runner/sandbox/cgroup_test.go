//go:build linux

package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestRemoveCgroupTreeWhileCgroupsAppear: a process of the tree keeps
// making child cgroups, as a container's systemd does while it starts
// units. Removal must not stop at the tree it read first (rmdir of a parent
// fails with EBUSY while a child it never saw exists).
func TestRemoveCgroupTreeWhileCgroupsAppear(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	layout, err := DetectLayout()
	if err != nil {
		t.Fatal(err)
	}
	dirs, _, err := planCgroups(layout, spec.Instance, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := createCgroups(layout, dirs, spec); err != nil {
		t.Fatal(err)
	}
	top := uniqueDirs(dirs)[0]
	t.Cleanup(func() { removeCgroups(context.Background(), uniqueDirs(dirs)) })
	// The spawner lives in a child cgroup and makes siblings and nephews
	// of it as fast as it can.
	home := filepath.Join(top, "spawner")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	script := `echo $$ > "$1/spawner/cgroup.procs" || exit 1
echo ready
i=0
while :; do mkdir "$1/u$i" "$1/u$i/v" "$1/spawner/w$i" 2>/dev/null; i=$((i+1)); done`
	cmd := exec.Command("sh", "-c", script, "sh", top)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("spawner did not start: %q %v", buf, err)
	}
	// Wait until it has really made cgroups, so removal races it.
	for len(cgroupTree(top)) < 20 {
	}
	if err := RemoveCgroupTree(context.Background(), top); err != nil {
		t.Fatalf("RemoveCgroupTree: %v", err)
	}
	if _, err := os.Stat(top); !os.IsNotExist(err) {
		t.Errorf("%s still exists (stat: %v)", top, err)
	}
	if procStart(cmd.Process.Pid) != 0 {
		t.Errorf("the spawner %d survived", cmd.Process.Pid)
	}
}

func TestRemoveCgroupTreeRefusesForeignDirs(t *testing.T) {
	if err := RemoveCgroupTree(context.Background(), "/sys/fs/cgroup/system.slice"); err == nil {
		t.Error("removed a cgroup outside labctl's subtree")
	}
}
