package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/labctl/labctl/checks"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/internal/testenv"
	"github.com/labctl/labctl/runner"
)

// The test binary is also every helper: the host's init, the enter
// helper and the services of this package are it, re-executed.
func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireLabs(t, "brings labs up in namespaces and cgroups")
}

// up brings a lab up in a private state root and proves, when the test
// ends, that nothing of it is left on the machine.
func up(t *testing.T, name string) *runner.Instance {
	t.Helper()
	requireRoot(t)
	t.Setenv(runner.EnvStateDir, t.TempDir())
	before, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	in, err := runner.Up(context.Background(), testenv.CatalogLab(t, "processes", name), runner.UpOptions{})
	if err != nil {
		t.Fatalf("up %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := in.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
		after, err := hostsnap.Take()
		if err != nil {
			t.Fatal(err)
		}
		if left := after.Mentioning(in.ID); len(left) > 0 {
			t.Errorf("residue after down: %v", left)
		}
		// Other engineers' labs may come and go meanwhile: compare what no
		// lab may ever change (the machine's links, addresses, routes, /etc,
		// loop devices); this lab's own netns, mounts, cgroups and
		// processes are covered by Mentioning above.
		if d := hostsnap.Diff(machineOnly(before), machineOnly(after)); d != "" {
			t.Errorf("machine changed by the lab (-before +after):\n%s", d)
		}
	})
	return in
}

func machineOnly(s *hostsnap.Snapshot) *hostsnap.Snapshot {
	c := *s
	c.NetNS, c.Mounts, c.Cgroups, c.Procs, c.Nspawn = nil, nil, nil, nil, nil
	return &c
}

func fact(t *testing.T, in *runner.Instance, name string) string {
	t.Helper()
	v, ok := in.Fact(name)
	if !ok {
		t.Fatalf("no fact %s", name)
	}
	return v
}

// run runs argv inside host app and returns its stdout.
func run(t *testing.T, in *runner.Instance, argv ...string) string {
	t.Helper()
	cmd, err := in.Command(context.Background(), "app", argv...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return string(out)
}

// traceUntil runs strace inside the host and returns the matches of want
// in its output once there are minMatches of them, or fails at the
// deadline. strace prints a syscall that is in progress when it attaches
// at once, but without a newline until the call returns, so the output is
// matched as it arrives, not line by line.
func traceUntil(t *testing.T, in *runner.Instance, want *regexp.Regexp, minMatches int, args ...string) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd, err := in.Command(ctx, "app", append([]string{"strace"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := stderr.Read(buf)
		out = append(out, buf[:n]...)
		if m := want.FindAllStringSubmatch(string(out), -1); len(m) >= minMatches {
			return m
		}
		if err != nil {
			break
		}
	}
	t.Fatalf("strace %v never showed %d matches of %s; it printed:\n%s", args, minMatches, want, out)
	return nil
}

func TestZombiesVisibleInPs(t *testing.T) {
	in := up(t, "zombie-parent")
	parent := fact(t, in, "leak.parent_pid")
	comm := fact(t, in, "leak.parent_comm")
	out := run(t, in, "ps", "-eo", "pid=,ppid=,stat=,comm=,args=")
	zombies := 0
	sawParent := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if f[0] == parent {
			sawParent = true
			if args := strings.Join(f[4:], " "); args != "jobrunner --config /etc/jobrunner.conf --workers 4" {
				t.Errorf("ps shows the parent as %q", args)
			}
		}
		if strings.HasPrefix(f[2], "Z") {
			if f[1] != parent {
				t.Errorf("zombie with PPID %s, want the parent fact %s: %s", f[1], parent, line)
			}
			if f[3] != comm {
				t.Errorf("zombie comm %q, want %q", f[3], comm)
			}
			zombies++
		}
	}
	if !sawParent || zombies == 0 {
		t.Fatalf("ps shows parent=%v and %d zombies:\n%s", sawParent, zombies, out)
	}
}

func TestIgnoredSIGTERMShowsInStatus(t *testing.T) {
	in := up(t, "sigterm-ignored")
	pid := fact(t, in, "api.pid")
	status := run(t, in, "cat", "/proc/"+pid+"/status")
	m := regexp.MustCompile(`(?m)^SigIgn:\s*([0-9a-f]+)$`).FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("no SigIgn in status:\n%s", status)
	}
	mask, err := strconv.ParseUint(m[1], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if mask&(1<<(15-1)) == 0 || mask&(1<<(2-1)) == 0 {
		t.Errorf("SigIgn %s does not have SIGTERM (15) and SIGINT (2)", m[1])
	}
	// An ignored signal is discarded when it is sent: right after kill
	// returns, the process must still exist.
	out := run(t, in, "sh", "-c", `kill -TERM "$1" && kill -0 "$1" && echo alive`, "sh", pid)
	if strings.TrimSpace(out) != "alive" {
		t.Errorf("after kill -TERM: %q", out)
	}
	if st := run(t, in, "ps", "-o", "comm=", "-p", pid); strings.TrimSpace(st) != "api" {
		t.Errorf("ps -p %s shows %q, want api", pid, st)
	}
}

func TestBlockedReadSeenByStrace(t *testing.T) {
	in := up(t, "stuck-on-pipe")
	pid, fd, fifo := fact(t, in, "q.pid"), fact(t, in, "q.fd"), fact(t, in, "q.fifo")
	traceUntil(t, in, regexp.MustCompile(`(?m)^read\(`+fd+`, `), 1, "-p", pid)
	link := strings.TrimSpace(run(t, in, "readlink", "/proc/"+pid+"/fd/"+fd))
	if link != fifo {
		t.Errorf("/proc/%s/fd/%s -> %q, want %q", pid, fd, link, fifo)
	}
	if mode := strings.TrimSpace(run(t, in, "stat", "-c", "%F", fifo)); mode != "fifo" {
		t.Errorf("%s is a %q, want a fifo", fifo, mode)
	}
	if w := strings.TrimSpace(run(t, in, "cat", "/proc/"+pid+"/wchan")); !strings.HasSuffix(w, "pipe_read") {
		t.Errorf("wchan %q, want a pipe read (pipe_read, anon_pipe_read)", w)
	}
}

func TestLockWaitersInFutex(t *testing.T) {
	in := up(t, "thread-pool-deadlock")
	pid, addr := fact(t, in, "pool.pid"), fact(t, in, "pool.lock_addr")
	holder := fact(t, in, "pool.holder_tid")
	waiters, err := strconv.Atoi(fact(t, in, "pool.waiters"))
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^\[pid +(\d+)\] futex\(` + addr + `, FUTEX_WAIT_PRIVATE, ` + holder + `, NULL`)
	tids := map[string]bool{}
	for _, m := range traceUntil(t, in, want, waiters, "-f", "-p", pid, "-e", "trace=futex,read") {
		tids[m[1]] = true
	}
	if len(tids) != waiters || tids[holder] {
		t.Errorf("threads waiting on the lock: %v, want %d others than the holder %s", tids, waiters, holder)
	}
	for tid := range tids {
		if w := strings.TrimSpace(run(t, in, "cat", fmt.Sprintf("/proc/%s/task/%s/wchan", pid, tid))); !strings.Contains(w, "futex") {
			t.Errorf("waiter %s wchan %q, want a futex wait", tid, w)
		}
	}
	if w := strings.TrimSpace(run(t, in, "cat", fmt.Sprintf("/proc/%s/task/%s/wchan", pid, holder))); !strings.HasSuffix(w, "pipe_read") {
		t.Errorf("holder %s wchan %q, want a pipe read", holder, w)
	}
}

// TestLabsSelfTest is `labctl test --repeat 3` for every lab of the family.
func TestLabsSelfTest(t *testing.T) {
	runs := testenv.SelfTestRuns(t)
	requireRoot(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "labs", "processes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no labs: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			t.Setenv(runner.EnvStateDir, t.TempDir())
			lab := testenv.CatalogLab(t, "processes", name)
			for run := 1; run <= runs; run++ {
				res := runner.SelfTest(context.Background(), lab, runner.TestOptions{Run: run})
				if p := res.Failed(); p != nil {
					t.Fatalf("run %d: phase %s %s: %s", run, p.Phase, p.Name, p.Message)
				}
			}
		})
	}
}

func TestPidsExhaustionRefusesForks(t *testing.T) {
	in := up(t, "pid-exhaustion")
	dir, err := in.CgroupDir("app", "pids")
	if err != nil {
		t.Fatal(err)
	}
	before := pidsEventsMax(t, dir)
	// 30 processes at once do not fit in the reserve the spawner leaves:
	// bash reports the refused fork (and retries until its own children
	// have exited, so it may end well).
	cmd, err := in.Command(context.Background(), "app", "bash", "-c", "for i in $(seq 30); do sleep 1 & done; wait")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "fork: retry: Resource temporarily unavailable") {
		t.Errorf("30 processes in the full host: bash printed:\n%s", out)
	}
	if after := pidsEventsMax(t, dir); after <= before {
		t.Errorf("pids.events max stayed at %d; the kernel refused no fork", after)
	}
	limit, err := readPidsFile(filepath.Join(dir, "pids.max"))
	if err != nil {
		t.Fatal(err)
	}
	if s := fact(t, in, "runner.limit"); s != strconv.Itoa(limit) {
		t.Errorf("limit fact %s, pids.max %d", s, limit)
	}
}

func pidsEventsMax(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "pids.events"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(data)), "max %d", &n); err != nil {
		t.Fatalf("pids.events %q: %v", data, err)
	}
	return n
}

func TestOrphansBecomeZombiesOfPID1(t *testing.T) {
	in := up(t, "reaper-missing")
	orphan := fact(t, in, "noreap.orphan_comm")
	out := run(t, in, "ps", "-eo", "pid=,ppid=,stat=,comm=")
	zombies := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && strings.HasPrefix(f[2], "Z") {
			if f[1] != "1" || f[3] != orphan {
				t.Errorf("zombie %q: want PPID 1 and comm %s", line, orphan)
			}
			zombies++
		}
	}
	if zombies == 0 {
		t.Fatalf("ps shows no zombie:\n%s", out)
	}
	if c := strings.TrimSpace(run(t, in, "ps", "-o", "comm=", "-p", "1")); c != fact(t, in, "noreap.init_comm") {
		t.Errorf("PID 1 is %q, fact says %q", c, fact(t, in, "noreap.init_comm"))
	}
	// What Revert does: the init reaps again, and at once.
	initPID, err := in.InitPID("app")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(initPID, syscall.Signal(resumeReapSignal)); err != nil {
		t.Fatal(err)
	}
	err = waitFor(context.Background(), "PID 1 reaps again", func() (bool, error) {
		n, err := zombieChildren(initPID)
		return n == 0, err
	})
	if err != nil {
		t.Error(err)
	}
}
