package fs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	_ "github.com/labctl/labctl/checks"
	_ "github.com/labctl/labctl/faults/fs"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/internal/testenv"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

// envCrashUp makes the test binary a labctl that brings a lab up (the
// crash test kills it half-way).
const envCrashUp = "LABCTL_FS_TEST_UP"

func TestMain(m *testing.M) {
	// Host inits, enter helpers and the services are this test binary
	// re-executed.
	if reexec.Init() {
		return
	}
	if file := os.Getenv(envCrashUp); file != "" {
		lab, err := labs.LoadFile(file)
		if err == nil {
			_, err = runner.Up(context.Background(), lab, runner.UpOptions{})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireLabs(t, "creates namespaces, cgroups and loop devices")
}

func labFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "labs", "fs", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no labs in labs/fs: %v", err)
	}
	return files
}

func up(t *testing.T, name string) *runner.Instance {
	t.Helper()
	in, err := runner.Up(context.Background(), testenv.CatalogLab(t, "fs", name), runner.UpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Down(context.Background()) })
	return in
}

// inHost runs argv inside the host and returns its combined output.
func inHost(t *testing.T, in *runner.Instance, argv ...string) string {
	t.Helper()
	cmd, err := in.Command(context.Background(), "app", argv...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func fact(t *testing.T, in *runner.Instance, name string) string {
	t.Helper()
	v, ok := in.Fact(name)
	if !ok {
		t.Fatalf("no fact %s", name)
	}
	return v
}

// machineState is what no lab of this family may change on the machine:
// the account files and the set of setuid files of its filesystems.
type machineState struct {
	Digests map[string]string
	Setuid  []string
}

func takeMachineState(t *testing.T) machineState {
	t.Helper()
	s := machineState{Digests: map[string]string{}}
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"} {
		data, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		s.Digests[f] = hex.EncodeToString(sum[:])
	}
	// -xdev: the machine's own root filesystem, where a planted file or
	// an overlay copy-up of one would land; lab mounts live in the
	// hosts' mount namespaces and are not in this one anyway.
	out, err := exec.Command("find", "/", "-xdev", "-perm", "-4000", "-type", "f").Output()
	if err != nil && len(out) == 0 {
		t.Fatalf("find setuid files: %v", err)
	}
	s.Setuid = strings.Fields(string(out))
	slices.Sort(s.Setuid)
	return s
}

// labDevices lists the loop devices and image files that belong to the
// state root: none may be left once an instance is gone.
func labDevices(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), root+"/") {
			out = append(out, f+" -> "+strings.TrimSpace(string(b)))
		}
	}
	_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".img") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func repeat() int {
	if n, err := strconv.Atoi(os.Getenv("LABCTL_REPEAT")); err == nil && n > 0 {
		return n
	}
	return 1
}

// TestLabsSelfTest is `labctl test` for every lab of the family
// (LABCTL_REPEAT times, default once; acceptance runs it with 3), and
// proves the machine untouched before, during and after each lab: the
// account files, the setuid files of the machine, no loop device or
// image left.
func TestLabsSelfTest(t *testing.T) {
	requireRoot(t)
	for _, file := range labFiles(t) {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			root := testenv.PrivateStateRoot(t)
			before := takeMachineState(t)
			lab := testenv.CatalogLab(t, "fs", name)

			// During: the lab is up and broken.
			in, err := runner.Up(context.Background(), lab, runner.UpOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(before, takeMachineState(t)); d != "" {
				t.Errorf("the machine changed while %s is up (-before +during):\n%s", name, d)
			}
			if err := in.Down(context.Background()); err != nil {
				t.Fatal(err)
			}
			if left := labDevices(t, root); len(left) > 0 {
				t.Errorf("left after down: %v", left)
			}

			for run := 1; run <= repeat(); run++ {
				res := runner.SelfTest(context.Background(), lab, runner.TestOptions{Run: run})
				if p := res.Failed(); p != nil {
					t.Fatalf("run %d: phase %s %s: %s", run, p.Phase, p.Name, p.Message)
				}
			}
			if d := cmp.Diff(before, takeMachineState(t)); d != "" {
				t.Errorf("the machine changed after %s (-before +after):\n%s", name, d)
			}
			if left := labDevices(t, root); len(left) > 0 {
				t.Errorf("left after the self-test: %v", left)
			}
		})
	}
}

// TestPermissionsServiceRunsAsLabUser: the service runs as the lab user,
// which exists in the host only, and the kernel refuses it.
func TestPermissionsServiceRunsAsLabUser(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	in := up(t, "config-unreadable")
	svc, user := fact(t, in, "svc.service"), fact(t, in, "svc.user")
	if got := strings.TrimSpace(inHost(t, in, "ps", "-o", "user=", "-C", svc)); got != user {
		t.Errorf("ps -o user= -C %s = %q, want %q", svc, got, user)
	}
	if log := inHost(t, in, "cat", fact(t, in, "svc.log")); !strings.Contains(log, "open "+fact(t, in, "svc.config")+": permission denied") {
		t.Errorf("the service's log does not show the refusal:\n%s", log)
	}
	if got := inHost(t, in, "stat", "-c", "%a %U %G", fact(t, in, "svc.config")); strings.TrimSpace(got) != "600 root "+user {
		t.Errorf("config: %q, want 600 root %s", got, user)
	}
	// The user is the host's only.
	if out := inHost(t, in, "getent", "passwd", user); !strings.HasPrefix(out, user+":x:2101:") {
		t.Errorf("getent passwd %s in the host: %q", user, out)
	}
	if err := exec.Command("getent", "passwd", user).Run(); err == nil {
		t.Errorf("the machine knows user %s", user)
	}
}

// TestFullBytesAndInodes: df -h says full for the bytes lab; df -i (and
// not df -h) for the inodes lab; the writer got ENOSPC.
func TestFullBytesAndInodes(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	for _, c := range []struct{ lab, id, fullCol, freeCol string }{
		{"logs-full", "fill", "pcent", "ipcent"},
		{"inodes-exhausted", "spool", "ipcent", "pcent"},
	} {
		in := up(t, c.lab)
		mount := fact(t, in, c.id+".mount")
		col := func(name string) int {
			out := strings.Fields(inHost(t, in, "df", "--output="+name, mount))
			n, err := strconv.Atoi(strings.TrimSuffix(out[len(out)-1], "%"))
			if err != nil {
				t.Fatalf("df --output=%s: %v", name, out)
			}
			return n
		}
		if n := col(c.fullCol); n != 100 {
			t.Errorf("%s: df %s = %d%%, want 100%%", c.lab, c.fullCol, n)
		}
		if n := col(c.freeCol); n >= 90 {
			t.Errorf("%s: df %s = %d%%: the other resource should not be exhausted", c.lab, c.freeCol, n)
		}
		if log := inHost(t, in, "cat", fact(t, in, c.id+".log")); !strings.Contains(log, "no space left on device") {
			t.Errorf("%s: the writer's log shows no ENOSPC:\n%s", c.lab, log)
		}
		if got := strings.TrimSpace(inHost(t, in, "ps", "-o", "user=", "-p", fact(t, in, c.id+".ns_pid"))); got != fact(t, in, c.id+".user") {
			t.Errorf("%s: writer runs as %q, want %q", c.lab, got, fact(t, in, c.id+".user"))
		}
		if err := in.Down(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadonlyRemount: findmnt shows ro and the writer got EROFS.
func TestReadonlyRemount(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	in := up(t, "readonly-remount")
	opts := strings.TrimSpace(inHost(t, in, "findmnt", "-n", "-o", "OPTIONS", fact(t, in, "ro.mount")))
	if !strings.HasPrefix(opts, "ro,") {
		t.Errorf("findmnt options %q, want ro", opts)
	}
	if log := inHost(t, in, "cat", fact(t, in, "ro.log")); !strings.Contains(log, "read-only file system") {
		t.Errorf("the writer's log shows no EROFS:\n%s", log)
	}
	if out, err := exec.Command("findmnt", "-n", fact(t, in, "ro.mount")).CombinedOutput(); err == nil {
		t.Errorf("the machine's mount table shows the lab mount: %s", out)
	}
}

// TestSetuidFoundInsideOnly: find -perm -4000 in the host lists the
// planted file among the system's; the file is setuid root.
func TestSetuidFoundInsideOnly(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	in := up(t, "setuid-audit")
	path := fact(t, in, "plant.path")
	found := strings.Fields(inHost(t, in, "find", "/usr/bin", fact(t, in, "plant.mount"), "-perm", "-4000", "-type", "f"))
	if !slices.Contains(found, path) || !slices.Contains(found, "/usr/bin/passwd") {
		t.Errorf("find -perm -4000 in the host: %v, want %s and /usr/bin/passwd", found, path)
	}
	if got := strings.TrimSpace(inHost(t, in, "stat", "-c", "%a %U", path)); got != "4755 root" {
		t.Errorf("planted file: %q, want 4755 root", got)
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s exists on the machine", path)
	}
}

// TestStickyOtherUserDeletes: the deletion is the other user's, and the
// kernel lets it happen only because the sticky bit is missing.
func TestStickyOtherUserDeletes(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	in := up(t, "sticky-missing")
	if got := strings.TrimSpace(inHost(t, in, "ps", "-o", "user=", "-p", fact(t, in, "bug.cleaner_ns_pid"))); got != fact(t, in, "bug.other") {
		t.Errorf("cleaner runs as %q, want %q", got, fact(t, in, "bug.other"))
	}
	dir := fact(t, in, "bug.dir")
	if got := strings.TrimSpace(inHost(t, in, "stat", "-c", "%A", dir)); got != "drwxrwxrwx" {
		t.Errorf("%s: %s, want drwxrwxrwx", dir, got)
	}
	inHost(t, in, "chmod", "+t", dir)
	log := fact(t, in, "bug.cleaner_log")
	report := fact(t, in, "bug.report")
	// With the sticky bit the kernel refuses the other user: the cleaner
	// logs EPERM for the report.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(inHost(t, in, "cat", log), "cannot remove "+report+": operation not permitted") {
		if time.Now().After(deadline) {
			t.Fatalf("the cleaner never got EPERM:\n%s", inHost(t, in, "cat", log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCrashThenGCLeavesNoLoopDevice: labctl killed while bringing up a
// lab with an ext4 image; gc removes the loop device and the image.
func TestCrashThenGCLeavesNoLoopDevice(t *testing.T) {
	requireRoot(t)
	root := testenv.PrivateStateRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	file, _ := filepath.Abs(filepath.Join("..", "..", "labs", "fs", "logs-full.yaml"))
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envCrashUp+"="+file)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(labDevices(t, root)) < 2 { // the loop device and its image
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no loop device appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	// If up finished before the kill, the instance is alive: crash its
	// host instead, so gc has a dead instance to collect either way.
	all, _ := runner.List()
	for _, in := range all {
		for _, h := range in.Hosts {
			_ = syscall.Kill(h.InitPID, syscall.SIGKILL)
		}
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		if _, err := runner.GC(context.Background()); err != nil {
			t.Fatal(err)
		}
		all, _ := runner.List()
		left := labDevices(t, root)
		if len(all) == 0 && len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after gc: %d instances, left: %v", len(all), left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
