package dstate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/labctl/labctl/faults"
	_ "github.com/labctl/labctl/faults/dstate"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/internal/testenv"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

const (
	freezeLab = "../../labs/dstate/kill-does-nothing.yaml"
	fuseLab   = "../../labs/dstate/reads-hang.yaml"
	// The crash child: the test binary re-executed brings this lab up
	// with a last fault that blocks, so it is killed mid-up for sure.
	envCrashLab    = "LABCTL_DSTATE_TEST_CRASH_LAB"
	envCrashMarker = "LABCTL_DSTATE_TEST_MARKER"
)

func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	// Registered in the parent too: its gc reverts the crashed fault.
	faults.Register(labs.FaultKind{Name: "test.block", Doc: "blocks up"}, blockKind{})
	if lab := os.Getenv(envCrashLab); lab != "" {
		os.Exit(crashChild(lab))
	}
	os.Exit(m.Run())
}

// blockKind is a test-only fault that signals it was reached and never
// returns: whatever came before it in the lab is applied, and the
// instance is not ready, as when labctl is killed during up.
type blockKind struct{}

func (blockKind) Apply(ctx context.Context, _ faults.Env, _ *labs.Fault, _ any) (*faults.Applied, error) {
	if err := os.WriteFile(os.Getenv(envCrashMarker), nil, 0o600); err != nil {
		return nil, err
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (blockKind) Revert(context.Context, faults.Env, *labs.Fault, json.RawMessage) error { return nil }

func crashChild(file string) int {
	lab, err := labs.LoadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if os.Getenv(envCrashMarker) != "" {
		lab.Faults = append(lab.Faults, labs.Fault{ID: "block", Kind: "test.block", Host: lab.Hosts[0].Name})
	}
	if _, err := runner.Up(context.Background(), lab, runner.UpOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireLabs(t, "mounts, freezes filesystems and starts lab hosts")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

func snapshot(t *testing.T) *hostsnap.Snapshot {
	t.Helper()
	s, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// requireNoResidue compares the machine with a snapshot taken before. The
// process list is left out of the whole-machine comparison because other
// engineers' labs may start or stop meanwhile; processes that mention the
// instance are checked instead.
func requireNoResidue(t *testing.T, before *hostsnap.Snapshot, id string) {
	t.Helper()
	after := snapshot(t)
	if d := cmp.Diff(before, after, cmpopts.IgnoreFields(hostsnap.Snapshot{}, "Procs")); d != "" {
		t.Errorf("the machine differs after down (-before +after):\n%s", d)
	}
	if id != "" {
		if left := after.Mentioning(id); len(left) > 0 {
			t.Errorf("residue of %s: %v", id, left)
		}
	}
}

func hostRun(t *testing.T, in *runner.Instance, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := in.Command(ctx, in.HostNames()[0], argv...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func status(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return ""
}

// sigkillPending reports whether SIGKILL (signal 9, bit 8) is pending for
// the process (shared) or its main thread.
func sigkillPending(t *testing.T, pid int) bool {
	t.Helper()
	for _, f := range []string{"ShdPnd", "SigPnd"} {
		mask, err := strconv.ParseUint(status(t, pid, f), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if mask&(1<<(syscall.SIGKILL-1)) != 0 {
			return true
		}
	}
	return false
}

// waitFor polls cond (the real condition) with a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func factPID(t *testing.T, in *runner.Instance, name string) int {
	t.Helper()
	pid, err := strconv.Atoi(in.Facts()[name])
	if err != nil {
		t.Fatalf("fact %s: %v", name, err)
	}
	return pid
}

// TestKillPendingOnFrozenFS: the writer shows D in /proc/PID/status, a
// kill -9 from inside the host leaves it alive with SIGKILL pending, and
// fsfreeze --unfreeze lets the kill through.
func TestKillPendingOnFrozenFS(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	before := snapshot(t)
	in, err := runner.Up(context.Background(), testenv.LoadLab(t, freezeLab), runner.UpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pid, nsPID := factPID(t, in, "stuck.pid"), in.Facts()["stuck.ns_pid"]
	if st := status(t, pid, "State"); !strings.HasPrefix(st, "D") {
		t.Fatalf("writer state %q, want D", st)
	}
	ps := hostRun(t, in, "ps", "-o", "stat=,comm=", "-p", nsPID)
	if !strings.HasPrefix(strings.TrimSpace(ps), "D") || !strings.Contains(ps, "backup") {
		t.Fatalf("ps inside the host shows %q, want backup in D", ps)
	}
	hostRun(t, in, "kill", "-9", nsPID)
	if !sigkillPending(t, pid) {
		t.Fatal("SIGKILL is not pending after kill -9")
	}
	if st := status(t, pid, "State"); !strings.HasPrefix(st, "D") {
		t.Fatalf("after kill -9 the writer is %q, want still D", st)
	}
	mount := in.Facts()["stuck.mount"]
	hostRun(t, in, "fsfreeze", "--unfreeze", mount)
	waitFor(t, "the writer to die of its pending SIGKILL", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d/status", pid))
		return err != nil
	})
	if err := in.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	requireNoResidue(t, before, in.ID)
}

// TestDownThawsFrozenFS: down on a lab left frozen must thaw first, or the
// writer (and the host's cgroup) could never die.
func TestDownThawsFrozenFS(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	before := snapshot(t)
	in, err := runner.Up(context.Background(), testenv.LoadLab(t, freezeLab), runner.UpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hostRun(t, in, "kill", "-9", in.Facts()["stuck.ns_pid"])
	if err := in.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	requireNoResidue(t, before, in.ID)
}

// TestFuseReadHangs: ls answers, the reader sits in D in
// request_wait_answer, kill -9 leaves it there, and teardown (abort
// through fusectl, then unmount) leaves nothing behind.
func TestFuseReadHangs(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	before := snapshot(t)
	in, err := runner.Up(context.Background(), testenv.LoadLab(t, fuseLab), runner.UpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pid, nsPID := factPID(t, in, "stuck.pid"), in.Facts()["stuck.ns_pid"]
	mount, file := in.Facts()["stuck.mount"], in.Facts()["stuck.file"]
	if ls := hostRun(t, in, "ls", mount); !strings.Contains(ls, filepath.Base(file)) {
		t.Fatalf("ls %s: %q, want %s listed", mount, ls, filepath.Base(file))
	}
	if st := status(t, pid, "State"); !strings.HasPrefix(st, "D") {
		t.Fatalf("reader state %q, want D", st)
	}
	if w := hostRun(t, in, "cat", "/proc/"+nsPID+"/wchan"); w != "request_wait_answer" {
		t.Fatalf("wchan %q, want request_wait_answer", w)
	}
	if stack := hostRun(t, in, "cat", "/proc/"+nsPID+"/stack"); !strings.Contains(stack, "fuse") {
		t.Fatalf("stack shows no fuse function:\n%s", stack)
	}
	hostRun(t, in, "kill", "-9", nsPID)
	if !sigkillPending(t, pid) {
		t.Fatal("SIGKILL is not pending after kill -9")
	}
	if st := status(t, pid, "State"); !strings.HasPrefix(st, "D") {
		t.Fatalf("after kill -9 the reader is %q, want still D", st)
	}
	if err := in.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("reader %d survived down", pid)
	}
	requireNoResidue(t, before, in.ID)
}

// TestCrashThenGC kills the up process (SIGKILL) while the filesystem is
// frozen or the FUSE read hangs, deterministically just after the fault,
// and at random points of up; gc must release everything.
func TestCrashThenGC(t *testing.T) {
	requireRoot(t)
	for _, file := range []string{freezeLab, fuseLab} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			testenv.PrivateStateRoot(t)
			before := snapshot(t)
			// Deterministic: the fault is applied (D exists), up is not done.
			marker := filepath.Join(t.TempDir(), "reached")
			child := crashCommand(file, marker)
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "up to reach the blocking fault", func() bool {
				_, err := os.Stat(marker)
				return err == nil
			})
			if n := stuckInD(t); n == 0 {
				t.Fatal("no lab process in D before the crash")
			}
			child.Process.Kill()
			child.Wait()
			gcAndCheck(t, before)
			// Random points of up, from before the host exists to after.
			for i := 0; i < 4; i++ {
				child := crashCommand(file, "")
				if err := child.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond) // when to crash, not readiness
				child.Process.Kill()
				child.Wait()
				gcAndCheck(t, before)
			}
		})
	}
}

func crashCommand(file, marker string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashLab+"="+file, envCrashMarker+"="+marker)
	return cmd
}

// gcAndCheck collects every instance of the private state root (a crashed
// one, or one that finished up before the kill) and checks the machine.
func gcAndCheck(t *testing.T, before *hostsnap.Snapshot) {
	t.Helper()
	if _, err := runner.GC(context.Background()); err != nil {
		t.Fatalf("gc: %v", err)
	}
	all, _ := runner.List()
	for _, in := range all { // up finished before the kill: a live lab
		if err := in.Down(context.Background()); err != nil {
			t.Fatalf("down %s: %v", in.ID, err)
		}
	}
	if n := stuckInD(t); n != 0 {
		t.Errorf("%d lab processes still in D after gc", n)
	}
	requireNoResidue(t, before, "")
}

// stuckInD counts processes named like the labs' stuck processes in D.
func stuckInD(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || len(s) < end+3 {
			continue
		}
		comm, state := s[open+1:end], s[end+2]
		if (comm == "backup" || comm == "indexer") && state == 'D' {
			n++
		}
	}
	return n
}

// TestSelfTest runs each lab of the family through labctl test's phases,
// three times.
func TestSelfTest(t *testing.T) {
	runs := testenv.SelfTestRuns(t)
	requireRoot(t)
	for _, file := range []string{freezeLab, fuseLab} {
		lab := testenv.LoadLab(t, file)
		for run := 1; run <= runs; run++ {
			t.Run(fmt.Sprintf("%s#%d", lab.Name, run), func(t *testing.T) {
				testenv.PrivateStateRoot(t)
				res := runner.SelfTest(context.Background(), lab, runner.TestOptions{Run: run})
				if !res.Pass {
					for _, p := range res.Phases {
						t.Logf("%+v", p)
					}
					t.Fatalf("%s failed: %+v", lab.Name, res.Failed())
				}
			})
		}
	}
}
