package fd_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	_ "github.com/labctl/labctl/faults/fd"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/internal/testenv"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

const (
	leakLab    = "../../labs/files/fd-leak.yaml"
	deletedLab = "../../labs/files/disk-full-du.yaml"
)

func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireLabs(t, "starts lab hosts and mounts in them")
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
	if left := after.Mentioning(id); len(left) > 0 {
		t.Errorf("residue of %s: %v", id, left)
	}
}

func up(t *testing.T, file string) *runner.Instance {
	t.Helper()
	lab, err := labs.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	in, err := runner.Up(context.Background(), lab, runner.UpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// sh runs a shell pipeline inside the lab's host, as a learner would.
func sh(t *testing.T, in *runner.Instance, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := in.Command(ctx, in.HostNames()[0], "sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestLeakFillsFDTable: `ls /proc/PID/fd | wc -l` inside the host equals
// the limit, /proc/PID/limits shows it, and the log says why requests fail.
func TestLeakFillsFDTable(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	before := snapshot(t)
	in := up(t, leakLab)
	facts := in.Facts()
	pid := facts["leak.ns_pid"]
	// pid is a fact, not user input: the script is fixed but for digits.
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("ns_pid %q", pid)
	}
	if n := sh(t, in, "ls /proc/"+pid+"/fd | wc -l"); n != facts["leak.limit"] {
		t.Errorf("ls /proc/%s/fd | wc -l = %s, want the limit %s", pid, n, facts["leak.limit"])
	}
	limits := sh(t, in, "grep 'Max open files' /proc/"+pid+"/limits")
	if f := strings.Fields(limits); len(f) < 5 || f[3] != facts["leak.limit"] || f[4] != facts["leak.hard_limit"] {
		t.Errorf("limits line %q, want soft %s hard %s", limits, facts["leak.limit"], facts["leak.hard_limit"])
	}
	if log := sh(t, in, "tail -n 1 "+facts["leak.log"]); !strings.Contains(log, "too many open files") {
		t.Errorf("last log line %q, want too many open files", log)
	}
	if socks := sh(t, in, "ls -l /proc/"+pid+"/fd | grep -c socket:"); mustAtoi(t, socks) < mustAtoi(t, facts["leak.limit"])-16 {
		t.Errorf("only %s sockets among the descriptors", socks)
	}
	if err := in.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	requireNoResidue(t, before, in.ID)
}

// TestDeletedOpenDfVsDu: df reports the filesystem full, du does not, and
// lsof +L1 names the deleted file and its holder.
func TestDeletedOpenDfVsDu(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	before := snapshot(t)
	in := up(t, deletedLab)
	facts := in.Facts()
	mount := facts["full.mount"]
	if pcent := sh(t, in, "df --output=pcent "+mount+" | tail -n 1"); pcent != "100%" {
		t.Errorf("df says %s used, want 100%%", pcent)
	}
	du := mustAtoi(t, strings.Fields(sh(t, in, "du -sk "+mount))[0])
	size := mustAtoi(t, sh(t, in, "df --output=size -k "+mount+" | tail -n 1"))
	if du*10 > size {
		t.Errorf("du finds %d KiB of %d KiB: the space should be invisible to du", du, size)
	}
	lsof := sh(t, in, "lsof -nP +L1 2>/dev/null | grep -F "+facts["full.file"]+" || true")
	if !strings.Contains(lsof, facts["full.service"]) || !strings.Contains(lsof, facts["full.ns_pid"]) {
		t.Errorf("lsof +L1 does not show %s (pid %s) holding %s:\n%s", facts["full.service"], facts["full.ns_pid"], facts["full.file"], lsof)
	}
	if err := in.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	requireNoResidue(t, before, in.ID)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// TestSelfTest runs each lab of the family through labctl test's phases,
// three times.
func TestSelfTest(t *testing.T) {
	runs := testenv.SelfTestRuns(t)
	requireRoot(t)
	for _, file := range []string{leakLab, deletedLab} {
		lab, err := labs.LoadFile(file)
		if err != nil {
			t.Fatal(err)
		}
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
