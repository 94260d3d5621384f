//go:build linux

package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
)

func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

// requireRoot skips privileged tests on machines where they cannot run;
// CI runs as root, so they run there.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces, cgroups and mounts")
	}
	if err := CheckSupport(); err != nil {
		t.Skipf("this machine cannot run hosts: %v", err)
	}
}

// ledger is a Recorder that keeps records in memory, as the runner's
// write-ahead ledger does on disk.
type ledger struct {
	entries []ledgerEntry
}

type ledgerEntry struct {
	Kind, Name string
	Data       json.RawMessage
}

func (l *ledger) record(kind, name string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	l.entries = append(l.entries, ledgerEntry{kind, name, raw})
	return nil
}

// releaseAll is what gc does with only the ledger: release in reverse.
// newLedger returns a test ledger whose records are released when the
// test ends, whatever happened: a Start that fails half-way (t.Fatal
// before the test's own cleanup exists) leaves nothing on the machine.
// Release is idempotent, so tests that release themselves lose nothing.
func newLedger(tb testing.TB) *ledger {
	l := &ledger{}
	tb.Cleanup(func() {
		if err := l.releaseAll(context.Background()); err != nil {
			tb.Errorf("final release: %v", err)
		}
	})
	return l
}

func (l *ledger) releaseAll(ctx context.Context) error {
	var errs []error
	for i := len(l.entries) - 1; i >= 0; i-- {
		e := l.entries[i]
		if err := Release(ctx, e.Kind, e.Name, e.Data); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", e.Kind, e.Name, err))
		}
	}
	return errors.Join(errs...)
}

func randomID(t testing.TB) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b[:])
}

const (
	testMemory = 64 << 20
	testPids   = 32
)

// testSpec returns a host spec whose state dir lives where the runner's
// would (/run/labctl/<id>/hosts/<name>), removed at the end of the test.
func testSpec(t testing.TB) Spec {
	id := randomID(t)
	stateDir := filepath.Join(stateRoot, id, "hosts", "app")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(filepath.Join(stateRoot, id))
		_ = unix.Rmdir(stateRoot) // only if no one else uses it
	})
	return Spec{
		Instance:   id,
		Lab:        "sandbox-test",
		Name:       "app",
		Hostname:   "app-" + id,
		Memory:     testMemory,
		Pids:       testPids,
		StateDir:   stateDir,
		ResolvConf: []byte("nameserver 192.0.2.53\noptions timeout:1 attempts:1\n"),
		EtcHosts:   []byte("127.0.0.1 localhost\n192.0.2.10 db\n"),
		Files: []File{
			{Path: "/etc/labctl-" + id + ".conf", Content: []byte("secret=no\n"), Mode: 0o640, UID: 0, GID: 0},
			{Path: "/srv/" + id + "/app/config.yaml", Content: []byte("port: 8080\n"), Mode: 0o600, UID: 1, GID: 1},
		},
		NetNSName: "labctl-" + id + "-app",
	}
}

// startHost starts a host and checks, at the end of the test, that Stop
// and the release of every record leave nothing behind.
func startHost(t *testing.T, spec Spec) (*Host, *ledger) {
	t.Helper()
	ctx := context.Background()
	l := newLedger(t)
	h, err := Start(ctx, spec, l.record)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := Stop(ctx, h); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if err := l.releaseAll(ctx); err != nil {
			t.Errorf("release after Stop (must be idempotent): %v", err)
		}
		assertGone(t, spec, h)
	})
	return h, l
}

// run runs argv inside the host and returns its combined output.
func run(t *testing.T, h *Host, argv ...string) string {
	t.Helper()
	out, err := Command(context.Background(), h, nil, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("%q in host: %v\n%s", argv, err, out)
	}
	return string(out)
}

// assertGone checks that nothing of the host remains on the machine.
func assertGone(t testing.TB, spec Spec, h *Host) {
	t.Helper()
	if h != nil && Alive(h) {
		t.Errorf("init %d still alive", h.InitPID)
	}
	if h != nil && h.InitPID > 0 {
		// Dead, but its parent (this test, through Start's goroutine)
		// reaps it asynchronously: poll for the zombie to go.
		waitFor(t, 10*time.Second, "the init's zombie to be reaped", func() bool {
			st, err := processStartTime(h.InitPID)
			return err != nil || st != h.InitStartTime
		})
	}
	layout, err := DetectLayout()
	if err != nil {
		t.Fatal(err)
	}
	dirs, _, err := planCgroups(layout, spec.Instance, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range uniqueDirs(dirs) {
		for _, p := range []string{d, filepath.Dir(d)} { // the host and its instance
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s remains (%v)", p, err)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(netnsDir, spec.NetNSName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s remains (%v)", spec.NetNSName, err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(mi, []byte(spec.Instance)) {
		t.Errorf("a mount of instance %s remains:\n%s", spec.Instance, grepLines(string(mi), spec.Instance))
	}
	// No process of the machine is in the instance's cgroups or runs the
	// host's init.
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err == nil && bytes.Contains(data, []byte("/"+cgroupParent+"/"+spec.Instance+"/")) {
			t.Errorf("process %s is still in the instance's cgroups", filepath.Dir(p))
		}
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestHostView(t *testing.T) {
	requireRoot(t)
	resolvBefore := fileDigest(t, "/etc/resolv.conf")
	spec := testSpec(t)
	h, _ := startHost(t, spec)

	t.Run("pid namespace", func(t *testing.T) {
		out := run(t, h, "ps", "-e", "-o", "pid=,ppid=,comm=")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("ps -e inside lists %d processes, want the init and ps:\n%s", len(lines), out)
		}
		if f := strings.Fields(lines[0]); len(f) != 3 || f[0] != "1" || f[2] != initComm {
			t.Errorf("PID 1 is %q, want %s", lines[0], initComm)
		}
		args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", h.InitPID))
		if err != nil {
			t.Fatal(err)
		}
		want := initComm + "\x00" + spec.Lab + "/" + spec.Name + "\x00"
		if string(args) != want {
			t.Errorf("init argv = %q, want %q", args, want)
		}
	})

	t.Run("hostname", func(t *testing.T) {
		if got := strings.TrimSpace(run(t, h, "hostname")); got != spec.Hostname {
			t.Errorf("hostname = %q, want %q", got, spec.Hostname)
		}
		machine, _ := os.Hostname()
		if machine == spec.Hostname {
			t.Errorf("the machine's hostname changed to %q", machine)
		}
	})

	t.Run("etc", func(t *testing.T) {
		if got := run(t, h, "cat", "/etc/resolv.conf"); got != string(spec.ResolvConf) {
			t.Errorf("resolv.conf inside = %q, want %q", got, spec.ResolvConf)
		}
		if got := run(t, h, "cat", "/etc/hosts"); got != string(spec.EtcHosts) {
			t.Errorf("hosts inside = %q, want %q", got, spec.EtcHosts)
		}
		// The learner edits /etc; the machine's stays as it was.
		run(t, h, "sh", "-c", "echo 'nameserver 192.0.2.54' >> /etc/resolv.conf")
		if got := fileDigest(t, "/etc/resolv.conf"); got != resolvBefore {
			t.Errorf("the machine's /etc/resolv.conf changed")
		}
		// Machine files the lab did not declare are visible as they are.
		if got, want := run(t, h, "cat", "/etc/os-release"), mustRead(t, "/etc/os-release"); got != want {
			t.Errorf("/etc/os-release inside differs from the machine's")
		}
	})

	t.Run("declared files", func(t *testing.T) {
		for _, f := range spec.Files {
			out := run(t, h, "stat", "-c", "%a %u %g", f.Path)
			want := fmt.Sprintf("%o %d %d\n", f.Mode.Perm(), f.UID, f.GID)
			if out != want {
				t.Errorf("stat %s inside = %q, want %q", f.Path, out, want)
			}
			if got := run(t, h, "cat", f.Path); got != string(f.Content) {
				t.Errorf("%s inside = %q, want %q", f.Path, got, f.Content)
			}
			if _, err := os.Lstat(f.Path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists on the machine (%v)", f.Path, err)
			}
		}
		if _, err := os.Lstat("/srv/" + spec.Instance); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the declared file's directory exists on the machine (%v)", err)
		}
	})

	t.Run("tmp", func(t *testing.T) {
		name := "labctl-tmp-" + spec.Instance
		machineFile := filepath.Join(os.TempDir(), name)
		if err := os.WriteFile(machineFile, []byte("machine"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(machineFile)
		if out, err := Command(context.Background(), h, nil, "test", "-e", "/tmp/"+name).CombinedOutput(); err == nil {
			t.Errorf("the machine's /tmp/%s is visible inside %s", name, out)
		}
		run(t, h, "sh", "-c", "echo host > /tmp/from-host")
		if _, err := os.Lstat("/tmp/from-host"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a file the host wrote to /tmp is on the machine (%v)", err)
			os.Remove("/tmp/from-host")
		}
	})

	t.Run("hidden dirs", func(t *testing.T) {
		if _, err := os.Stat(spec.StateDir); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{stateRoot, netnsDir} {
			if out := run(t, h, "ls", "-A", dir); out != "" {
				t.Errorf("%s inside is not empty:\n%s", dir, out)
			}
			if _, err := Command(context.Background(), h, nil, "touch", dir+"/x").CombinedOutput(); err == nil {
				t.Errorf("%s inside is writable", dir)
			}
		}
	})

	t.Run("proc sys", func(t *testing.T) {
		out, err := Command(context.Background(), h, nil, "sh", "-c", "echo labctl > /proc/sys/kernel/domainname").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Read-only file system") {
			t.Errorf("writing /proc/sys/kernel inside: err=%v out=%q, want a read-only error", err, out)
		}
		before := mustRead(t, "/proc/sys/net/ipv4/ip_forward")
		want := "1\n"
		if before == "1\n" {
			want = "0\n"
		}
		run(t, h, "sh", "-c", "echo "+strings.TrimSpace(want)+" > /proc/sys/net/ipv4/ip_forward")
		if got := run(t, h, "cat", "/proc/sys/net/ipv4/ip_forward"); got != want {
			t.Errorf("ip_forward inside = %q after writing %q", got, want)
		}
		if got := mustRead(t, "/proc/sys/net/ipv4/ip_forward"); got != before {
			t.Errorf("the machine's ip_forward changed from %q to %q", before, got)
		}
	})

	t.Run("network", func(t *testing.T) {
		out := run(t, h, "ip", "-o", "link", "show")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], ": lo:") || !strings.Contains(lines[0], "UP") {
			t.Errorf("links inside = %q, want only lo, up", out)
		}
		list, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns list: %v\n%s", err, list)
		}
		if !strings.Contains(string(list), spec.NetNSName) {
			t.Errorf("ip netns list does not show %s:\n%s", spec.NetNSName, list)
		}
		// Entering through the named netns reaches the same namespace.
		out2, err := exec.Command("ip", "netns", "exec", spec.NetNSName, "ip", "-o", "link", "show").CombinedOutput()
		if err != nil || string(out2) != out {
			t.Errorf("ip netns exec %s ip link = %q (%v), want %q", spec.NetNSName, out2, err, out)
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		status := run(t, h, "cat", "/proc/self/status")
		initStatus := mustRead(t, fmt.Sprintf("/proc/%d/status", h.InitPID))
		for _, who := range []struct{ name, status string }{{"entered command", status}, {"init", initStatus}} {
			for _, field := range []string{"CapBnd", "CapEff", "CapPrm"} {
				caps := capField(t, who.status, field)
				for _, c := range droppedCaps {
					if caps&(1<<c) != 0 {
						t.Errorf("%s: %s %x has capability %d", who.name, field, caps, c)
					}
				}
				for _, c := range []uint{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SYSLOG, unix.CAP_KILL} {
					if caps&(1<<c) == 0 {
						t.Errorf("%s: %s %x lacks capability %d it must keep", who.name, field, caps, c)
					}
				}
			}
		}
	})

	t.Run("cgroup view", func(t *testing.T) {
		if h.Layout != CgroupV1 {
			t.Skip("cgroup v2 view checks need a unified machine")
		}
		self := run(t, h, "cat", "/proc/self/cgroup")
		if !strings.Contains(self, ":memory:/\n") || !strings.Contains(self, ":pids:/\n") {
			t.Errorf("/proc/self/cgroup inside does not show the namespace root:\n%s", self)
		}
		if got := run(t, h, "cat", "/sys/fs/cgroup/pids/pids.max"); got != strconv.Itoa(testPids)+"\n" {
			t.Errorf("pids.max inside = %q, want %d", got, testPids)
		}
		if got := run(t, h, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"); got != strconv.Itoa(testMemory)+"\n" {
			t.Errorf("memory.limit_in_bytes inside = %q, want %d", got, testMemory)
		}
		// The learner's fix: raise the limit from inside.
		run(t, h, "sh", "-c", "echo 40 > /sys/fs/cgroup/pids/pids.max")
		if got := mustRead(t, filepath.Join(h.Cgroups["pids"], "pids.max")); got != "40\n" {
			t.Errorf("pids.max on the machine after raising it inside = %q, want 40", got)
		}
		run(t, h, "sh", "-c", "echo "+strconv.Itoa(testPids)+" > /sys/fs/cgroup/pids/pids.max")
		// Every process of the host is in its cgroups.
		for _, d := range uniqueDirs(h.Cgroups) {
			pids, err := cgroupPIDs(d)
			if err != nil || !containsInt(pids, h.InitPID) {
				t.Errorf("init %d not in %s (%v %v)", h.InitPID, d, pids, err)
			}
		}
	})

	t.Run("orphans are reaped", func(t *testing.T) {
		// sh exits at once; its background child is re-parented to PID 1.
		out := run(t, h, "sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!")
		pid := strings.TrimSpace(out)
		if ppid := strings.TrimSpace(run(t, h, "ps", "-o", "ppid=", "-p", pid)); ppid != "1" {
			t.Fatalf("orphan %s has parent %q, want 1", pid, ppid)
		}
		run(t, h, "kill", pid)
		// Once it exits, PID 1 must wait for it: a zombie keeps its /proc entry.
		waitFor(t, 10*time.Second, "the orphan to be reaped", func() bool {
			err := Command(context.Background(), h, nil, "test", "-e", "/proc/"+pid).Run()
			return err != nil
		})
		if out := run(t, h, "ps", "-e", "-o", "stat=,pid=,comm="); strings.Contains(out, "Z") {
			t.Errorf("zombies inside:\n%s", out)
		}
	})

	t.Run("pids limit", func(t *testing.T) {
		// Fork until the kernel refuses; report what the cgroup counts at
		// that moment (v1 or v2 file); then clean up the children.
		const forker = `my @kids; while (1) { my $p = fork; if (!defined $p) { print "fork: $!\n"; last } if ($p == 0) { sleep 600; exit 0 } push @kids, $p }
my ($cf) = grep { -e } ("/sys/fs/cgroup/pids/pids.current", "/sys/fs/cgroup/pids.current"); open(my $f, "<", $cf) or die "no pids.current"; print "current: ", <$f>; kill "KILL", @kids; waitpid($_, 0) for @kids;`
		out := run(t, h, "perl", "-e", forker)
		if !strings.Contains(out, "fork: Resource temporarily unavailable") {
			t.Errorf("fork bomb output %q, want fork: Resource temporarily unavailable", out)
		}
		if h.Layout == CgroupV1 && !strings.Contains(out, "current: "+strconv.Itoa(testPids)+"\n") {
			t.Errorf("fork bomb output %q, want the cgroup at its limit of %d", out, testPids)
		}
		events := mustRead(t, filepath.Join(h.Cgroups[pidsKey(h)], "pids.events"))
		if n := counter(events, "max"); n < 1 {
			t.Errorf("pids.events max = %d, want > 0:\n%s", n, events)
		}
		// The machine is unaffected: it still forks.
		if err := exec.Command("true").Run(); err != nil {
			t.Errorf("the machine cannot fork after the host's fork bomb: %v", err)
		}
	})

	t.Run("oom kill", func(t *testing.T) {
		// dd's 200 MiB buffer, filled by read(2), is more than the 64 MiB limit.
		cmd := Command(context.Background(), h, nil, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 128+int(unix.SIGKILL) {
			t.Errorf("dd beyond the memory limit: %v, want exit %d (SIGKILL)\n%s", err, 128+int(unix.SIGKILL), out)
		}
		if h.Layout == CgroupV1 {
			oom := mustRead(t, filepath.Join(h.Cgroups["memory"], "memory.oom_control"))
			if n := counter(oom, "oom_kill"); n < 1 {
				t.Errorf("memory.oom_control oom_kill = %d, want >= 1:\n%s", n, oom)
			}
		} else {
			events := mustRead(t, filepath.Join(h.Cgroups["unified"], "memory.events"))
			if n := counter(events, "oom_kill"); n < 1 {
				t.Errorf("memory.events oom_kill = %d, want >= 1:\n%s", n, events)
			}
		}
		if !Alive(h) {
			t.Errorf("the host's init died with the OOM kill")
		}
		// The host still works after the kill.
		run(t, h, "true")
	})
}

func pidsKey(h *Host) string {
	if h.Layout == CgroupV2 {
		return "unified"
	}
	return "pids"
}

// counter reads "name N" from a flat-keyed cgroup file.
func counter(content, name string) int64 {
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return -1
}

func capField(t *testing.T, status, field string) uint64 {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in status", field)
	return 0
}

func containsInt(list []int, x int) bool {
	for _, v := range list {
		if v == x {
			return true
		}
	}
	return false
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
