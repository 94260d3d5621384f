package checks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/labs"
)

// newParams returns the registered defaults of a probe kind.
func newParams[P any](t *testing.T, kind string) P {
	t.Helper()
	k, ok := labs.LookupProbe(kind)
	if !ok {
		t.Fatalf("probe kind %q is not registered", kind)
	}
	p, ok := k.NewParams().(P)
	if !ok {
		t.Fatalf("probe kind %q: params are %T", kind, k.NewParams())
	}
	return p
}

// probeCase is one probe run and whether it must pass.
type probeCase[P any] struct {
	name   string
	set    func(p P)
	pass   bool
	inSeen string // a substring Seen must contain, if set
}

// runProbeCases runs each case on fresh defaults, validated the way the
// loader would, through the registered driver.
func runProbeCases[P any](t *testing.T, kind string, tt *testTarget, host string, cases []probeCase[P]) {
	t.Helper()
	prober, ok := Lookup(kind)
	if !ok {
		t.Fatalf("no driver for %q", kind)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newParams[P](t, kind)
			tc.set(p)
			if v, ok := any(p).(labs.ParamValidator); ok {
				if err := v.Validate(); err != nil {
					t.Fatalf("params do not validate: %v", err)
				}
			}
			res := prober.Probe(context.Background(), tt, host, p)
			if res.Pass != tc.pass {
				t.Errorf("Pass = %v, want %v; result %+v", res.Pass, tc.pass, res)
			}
			if res.Message == "" {
				t.Errorf("no message: %+v", res)
			}
			if tc.inSeen != "" && !strings.Contains(res.Seen, tc.inSeen) {
				t.Errorf("Seen = %q, want it to mention %q", res.Seen, tc.inSeen)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestProbeCommand(t *testing.T) {
	skipUnlessRoot(t)
	tt := newTestTarget()
	startHost(t, tt, "app")
	inHost(t, tt, "app", "hostname", "lab-app")
	runProbeCases(t, "command", tt, "app", []probeCase[*CommandParams]{
		{"runs inside the host's uts namespace", func(p *CommandParams) { p.Argv = []string{"hostname"}; p.Stdout = `^lab-app\n$` }, true, "lab-app"},
		{"stdout mismatch", func(p *CommandParams) { p.Argv = []string{"hostname"}; p.Stdout = `^web$` }, false, "lab-app"},
		{"exit code expected", func(p *CommandParams) { p.Argv = []string{"sh", "-c", "exit 3"}; p.Exit = ptr(3) }, true, "exit 3"},
		{"exit code default 0", func(p *CommandParams) { p.Argv = []string{"sh", "-c", "exit 3"} }, false, "exit 3"},
		{"stderr regex", func(p *CommandParams) {
			p.Argv = []string{"ls", "/nonexistent"}
			p.Exit = ptr(2)
			p.Stderr = `No such file`
		}, true, "No such file"},
		{"stderr mismatch", func(p *CommandParams) {
			p.Argv = []string{"ls", "/nonexistent"}
			p.Exit = ptr(2)
			p.Stderr = `Permission denied`
		}, false, ""},
		{"timeout", func(p *CommandParams) {
			p.Argv = []string{"sleep", "60"}
			p.Timeout = labs.Duration(200 * time.Millisecond)
		}, false, "still running"},
		{"missing command", func(p *CommandParams) { p.Argv = []string{"/no/such/tool"} }, false, ""},
	})
	// The timed-out command did not stay behind inside the host.
	gone := newParams[*ProcessParams](t, "process")
	gone.Cmdline, gone.Present = `^sleep 60$`, ptr(false)
	waitFor(t, "the timed-out command to be killed", func() bool {
		return processProber{}.Probe(context.Background(), tt, "app", gone).Pass
	})
}

func TestProbeProcessAndZombies(t *testing.T) {
	skipUnlessRoot(t)
	tt := newTestTarget()
	h := startHost(t, tt, "app")
	leaky, _ := startHelper(t, tt, "app", "leaky", "40")
	parent, _, _ := startInHost(t, tt, "app", nil, "sh", "-c", "sleep 0 & exec sleep 1000")
	// Ready when the parent has exec'd sleep and its child is a zombie.
	var zombie int
	waitFor(t, "a zombie child", func() bool {
		if comm(parent) != "sleep" {
			return false
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			if p, err := readProc(pid); err == nil && p.State == "Z" {
				zombie = pid
				return true
			}
		}
		return false
	})
	self := strconv.Itoa(os.Getpid())
	runProbeCases(t, "process", tt, "app", []probeCase[*ProcessParams]{
		{"comm present", func(p *ProcessParams) { p.Comm = "leaky" }, true, "leaky"},
		{"comm longer than the kernel keeps", func(p *ProcessParams) { p.Comm = "sleep" + strings.Repeat("y", 20); p.Present = ptr(false) }, true, ""},
		{"comm absent", func(p *ProcessParams) { p.Comm = "nosuch" }, false, "no matching"},
		{"absent wanted", func(p *ProcessParams) { p.Comm = "nosuch"; p.Present = ptr(false) }, true, ""},
		{"absent wanted but running", func(p *ProcessParams) { p.Comm = "leaky"; p.Present = ptr(false) }, false, "leaky"},
		{"pid of the host", func(p *ProcessParams) { p.PID = strconv.Itoa(leaky) }, true, ""},
		{"pid outside the host", func(p *ProcessParams) { p.PID = self }, false, ""},
		{"cmdline and count", func(p *ProcessParams) { p.Cmdline = `^sleep infinity$`; p.Count = ptr(1) }, true, ""},
		{"count wrong", func(p *ProcessParams) { p.Cmdline = `^sleep infinity$`; p.Count = ptr(2) }, false, ""},
		{"max_fds exceeded", func(p *ProcessParams) { p.Comm = "leaky"; p.MaxFDs = ptr(20) }, false, "open fds"},
		{"max_fds within", func(p *ProcessParams) { p.Comm = "leaky"; p.MaxFDs = ptr(1000) }, true, ""},
		{"zombie is in state Z", func(p *ProcessParams) { p.PID = strconv.Itoa(zombie); p.StateNot = []string{"D", "Z"} }, false, "Z"},
		{"parent is not", func(p *ProcessParams) { p.PID = strconv.Itoa(parent); p.StateNot = []string{"D", "Z"} }, true, ""},
	})
	runProbeCases(t, "zombies", tt, "app", []probeCase[*ZombiesParams]{
		{"none allowed", func(p *ZombiesParams) {}, false, "1 zombie"},
		{"one allowed", func(p *ZombiesParams) { p.Max = 1 }, true, "1 zombie"},
		{"children of the parent", func(p *ZombiesParams) { p.Parent = strconv.Itoa(parent) }, false, "1 zombie"},
		{"children of init", func(p *ZombiesParams) { p.Parent = strconv.Itoa(h.initPID) }, true, "0 zombie"},
	})
}

func TestProbeConnect(t *testing.T) {
	skipUnlessRoot(t)
	machineNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tt := newTestTarget()
	hostsFile := writeTemp(t, "hosts", "127.0.0.1 localhost api.lab\n")
	resolvFile := writeTemp(t, "resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
	startHost(t, tt, "app", "sh", "-c", `mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec sleep infinity`, "sh", hostsFile, resolvFile)
	inHost(t, tt, "app", "ip", "link", "set", "lo", "up")
	// A veth pair inside the host's namespace: 10.77.0.2 is on-link but
	// nobody answers ARP, so a dial times out (nothing in the machine's
	// namespace is touched).
	inHost(t, tt, "app", "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	inHost(t, tt, "app", "ip", "link", "set", "v0", "up")
	inHost(t, tt, "app", "ip", "link", "set", "v1", "up")
	inHost(t, tt, "app", "ip", "addr", "add", "10.77.0.1/24", "dev", "v0")
	startHelper(t, tt, "app", "api", "127.0.0.1:8080")

	runProbeCases(t, "connect", tt, "app", []probeCase[*ConnectParams]{
		{"open inside the host", func(p *ConnectParams) { p.To = "127.0.0.1:8080" }, true, "open"},
		{"open but refused expected", func(p *ConnectParams) { p.To = "127.0.0.1:8080"; p.Expect = "refused" }, false, "open"},
		{"refused", func(p *ConnectParams) { p.To = "127.0.0.1:8081"; p.Expect = "refused" }, true, "refused"},
		{"refused but open expected", func(p *ConnectParams) { p.To = "127.0.0.1:8081" }, false, "refused"},
		{"no route", func(p *ConnectParams) { p.To = "10.9.9.9:80"; p.Expect = "unreachable" }, true, "unreachable"},
		{"silent drop", func(p *ConnectParams) {
			p.To = "10.77.0.2:80"
			p.Timeout = labs.Duration(300 * time.Millisecond)
			p.Expect = "timeout"
		}, true, "timeout"},
		{"name resolved inside the host", func(p *ConnectParams) { p.To = "api.lab:8080" }, true, "open"},
		{"name unknown to the host", func(p *ConnectParams) { p.To = "nosuch.lab:8080" }, false, ""},
	})
	// Every thread of this process is back in the machine's namespace.
	if !allEqual(threadNetNS(t), machineNS) {
		t.Errorf("a thread was left in another network namespace: %v", threadNetNS(t))
	}
}

// threadNetNS lists the network namespaces of this process's threads.
func threadNetNS(t *testing.T) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		if ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net"); err == nil {
			out = append(out, ns)
		}
	}
	return out
}

func allEqual(list []string, v string) bool {
	for _, s := range list {
		if s != v {
			return false
		}
	}
	return true
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProbeResolve(t *testing.T) {
	skipUnlessRoot(t)
	tt := newTestTarget()
	hostsFile := writeTemp(t, "hosts", "127.0.0.1 localhost\n10.1.2.3 db.lab\n")
	resolvFile := writeTemp(t, "resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
	startHost(t, tt, "app", "sh", "-c", `mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec sleep infinity`, "sh", hostsFile, resolvFile)
	if b, _ := os.ReadFile("/etc/hosts"); strings.Contains(string(b), "db.lab") {
		t.Fatal("the machine's own /etc/hosts knows db.lab; the test would prove nothing")
	}
	runProbeCases(t, "resolve", tt, "app", []probeCase[*ResolveParams]{
		{"resolves with the host's files", func(p *ResolveParams) { p.Name = "db.lab" }, true, "10.1.2.3"},
		{"expected address", func(p *ResolveParams) { p.Name = "db.lab"; p.ExpectAddr = "10.1.2.3" }, true, "10.1.2.3"},
		{"other address", func(p *ResolveParams) { p.Name = "db.lab"; p.ExpectAddr = "10.1.2.4" }, false, "10.1.2.3"},
		{"absent wanted", func(p *ResolveParams) { p.Name = "nosuch.lab"; p.Absent = true }, true, ""},
		{"absent wanted but resolves", func(p *ResolveParams) { p.Name = "db.lab"; p.Absent = true }, false, "10.1.2.3"},
		{"does not resolve", func(p *ResolveParams) { p.Name = "nosuch.lab" }, false, "not found"},
	})
	// The file probe sees the host's view too.
	runProbeCases(t, "file", tt, "app", []probeCase[*FileParams]{
		{"host's /etc/hosts", func(p *FileParams) { p.Path = "/etc/hosts"; p.Content = `10\.1\.2\.3\s+db\.lab` }, true, ""},
	})
}

func TestProbePort(t *testing.T) {
	skipUnlessRoot(t)
	tt := newTestTarget()
	startHost(t, tt, "app")
	inHost(t, tt, "app", "ip", "link", "set", "lo", "up")
	startHelper(t, tt, "app", "api", "0.0.0.0:8080")
	runProbeCases(t, "port", tt, "app", []probeCase[*PortParams]{
		{"listening", func(p *PortParams) { p.Port = 8080 }, true, "api"},
		{"by the right process", func(p *PortParams) { p.Port = 8080; p.Process = "^api$" }, true, ""},
		{"by another process", func(p *PortParams) { p.Port = 8080; p.Process = "^nginx$" }, false, "api"},
		{"on the wildcard address", func(p *PortParams) { p.Port = 8080; p.Addr = "0.0.0.0" }, true, ""},
		{"not on loopback only", func(p *PortParams) { p.Port = 8080; p.Addr = "127.0.0.1" }, false, ""},
		{"not on the IPv6 loopback", func(p *PortParams) { p.Port = 8080; p.Addr = "::1" }, false, ""},
		{"other port", func(p *PortParams) { p.Port = 8081 }, false, "no listening"},
		{"other port free", func(p *PortParams) { p.Port = 8081; p.Listening = ptr(false) }, true, ""},
		{"still listening", func(p *PortParams) { p.Port = 8080; p.Listening = ptr(false) }, false, ""},
		{"not udp", func(p *PortParams) { p.Port = 8080; p.Proto = "udp" }, false, ""},
	})
}

func TestProbeFile(t *testing.T) {
	tt := newTestTarget()
	root := t.TempDir()
	tt.hosts["app"] = &testHost{root: root}
	write := func(rel, content string, mode uint32) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		// chmod after create: umask must not decide the test. Raw bits,
		// because os.FileMode spells setuid differently.
		if err := syscall.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1234:1234::/home/alice:/bin/sh\n", 0o644)
	write("etc/group", "root:x:0:\nstaff:x:2345:\n", 0o644)
	conf := write("srv/app.conf", "listen 8080\nworkers 4\n", 0o640)
	write("usr/bin/tool", "#!/bin/sh\n", 0o4755)
	// An absolute link must be resolved inside the host's root: on the
	// machine, /srv/app.conf does not exist (or is another file).
	if err := os.Symlink("/srv/app.conf", filepath.Join(root, "etc/app.conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../srv/nothing", filepath.Join(root, "etc/dangling")); err != nil {
		t.Fatal(err)
	}

	cases := []probeCase[*FileParams]{
		{"exists", func(p *FileParams) { p.Path = "/srv/app.conf" }, true, ""},
		{"missing", func(p *FileParams) { p.Path = "/srv/other.conf" }, false, "does not exist"},
		{"absent wanted", func(p *FileParams) { p.Path = "/srv/other.conf"; p.Exists = ptr(false) }, true, ""},
		{"absent wanted but there", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Exists = ptr(false) }, false, ""},
		{"mode", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Mode = ptr(labs.Mode(0o640)) }, true, "0640"},
		{"mode wrong", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Mode = ptr(labs.Mode(0o644)) }, false, "0640"},
		{"setuid mode", func(p *FileParams) { p.Path = "/usr/bin/tool"; p.Mode = ptr(labs.Mode(0o4755)) }, true, "4755"},
		{"content", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Content = `(?m)^workers 4$` }, true, ""},
		{"content wrong", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Content = `listen 9090` }, false, "listen 8080"},
		{"absolute symlink followed in the host", func(p *FileParams) { p.Path = "/etc/app.conf"; p.Content = `workers 4` }, true, "0640"},
		{"dangling symlink", func(p *FileParams) { p.Path = "/etc/dangling" }, false, "does not exist"},
		{"size within", func(p *FileParams) { p.Path = "/srv/app.conf"; p.SizeMax = ptr(labs.Size(1024)) }, true, ""},
		{"size exceeded", func(p *FileParams) { p.Path = "/srv/app.conf"; p.SizeMax = ptr(labs.Size(4)) }, false, ""},
		{"owner unknown to the host", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Owner = "bob" }, false, "error"},
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(conf, 1234, 2345); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, []probeCase[*FileParams]{
			// alice and staff exist only in the host's files.
			{"owner by the host's names", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Owner = "alice:staff" }, true, "1234:2345"},
			{"owner user only", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Owner = "alice" }, true, ""},
			{"owner numeric", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Owner = "1234:2345" }, true, ""},
			{"owner wrong", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Owner = "root" }, false, ""},
			{"group wrong", func(p *FileParams) { p.Path = "/srv/app.conf"; p.Owner = "alice:root" }, false, ""},
		}...)
	} else {
		t.Log("not root: ownership cases need chown and are skipped")
	}
	runProbeCases(t, "file", tt, "app", cases)

	// A failing mode (and owner, as root) comes with a diff of what is
	// off; a passing probe has none.
	prober, _ := Lookup("file")
	p := newParams[*FileParams](t, "file")
	p.Path, p.Mode = "/srv/app.conf", ptr(labs.Mode(0o600))
	// go-cmp varies its whitespace on purpose; compare words.
	words := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	wantDiff := []string{`- Mode: "0600"`, `+ Mode: "0640"`}
	if os.Geteuid() == 0 {
		p.Owner = "alice:root"
		wantDiff = append(wantDiff, `- Owner: "1234:0"`, `+ Owner: "1234:2345"`)
	}
	res := prober.Probe(context.Background(), tt, "app", p)
	for _, line := range wantDiff {
		if res.Pass || !strings.Contains(words(res.Diff), line) {
			t.Errorf("failing file probe: Diff = %q, want it to contain %q", res.Diff, line)
		}
	}
	p.Mode, p.Owner = ptr(labs.Mode(0o640)), ""
	if res := prober.Probe(context.Background(), tt, "app", p); !res.Pass || res.Diff != "" {
		t.Errorf("passing file probe: %+v, want a pass without a diff", res)
	}
}

// makeTestCgroup creates a v1 cgroup for one test under labctl's own
// subtree and removes it (proving it gone) at cleanup.
func makeTestCgroup(t *testing.T, controller string) string {
	t.Helper()
	root := filepath.Join("/sys/fs/cgroup", controller)
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		t.Skipf("needs a cgroup v1 %s hierarchy at %s (this machine has none); v2 files are covered by TestCounterFiles", controller, root)
	}
	base := filepath.Join(root, "labctl")
	created := false
	if err := os.Mkdir(base, 0o755); err == nil {
		created = true
	} else if !os.IsExist(err) {
		t.Fatal(err)
	}
	dir := filepath.Join(base, fmt.Sprintf("checks-test-%d-%x", os.Getpid(), rand.Uint32()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Runs after the host's cleanup (LIFO): its processes are gone,
		// but the kernel may take a moment to empty the cgroup.
		waitFor(t, "the test cgroup to be removable", func() bool {
			err := os.Remove(dir)
			return err == nil || os.IsNotExist(err)
		})
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left behind", dir)
		}
		if created {
			os.Remove(base) // only if empty: another test may be using it
		}
	})
	return dir
}

func TestProbeCgroupPids(t *testing.T) {
	skipUnlessRoot(t)
	dir := makeTestCgroup(t, "pids")
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	tt := newTestTarget()
	h := startHost(t, tt, "app")
	h.cgroups["pids"] = dir
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(h.initPID)), 0); err != nil {
		t.Fatal(err)
	}
	// A shell inside the host waits on stdin until it is in the cgroup,
	// then forks more than pids.max allows.
	cmd, err := tt.Command(context.Background(), "app", "sh", "-c", "read go; sleep 1000 & sleep 1000 & sleep 1000 & wait")
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sh := childPID(t, cmd.Process.Pid)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(sh)), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	var rejected int64
	waitFor(t, "a fork rejected by the pids controller", func() bool {
		rejected, err = Counter(dir, "pids", "max")
		return err == nil && rejected > 0
	})

	counter := func(since string, maxInc int64) func(p *CgroupParams) {
		return func(p *CgroupParams) {
			p.Controller, p.Counter, p.Since, p.MaxIncrease = "pids", "max", since, ptr(maxInc)
		}
	}
	t.Run("no mark", func(t *testing.T) {
		runProbeCases(t, "cgroup", tt, "app", []probeCase[*CgroupParams]{
			{"counts from zero", counter("up", 0), false, "+" + strconv.FormatInt(rejected, 10)},
			{"within a generous bound", counter("up", rejected), true, ""},
		})
	})
	t.Run("marks", func(t *testing.T) {
		tt.marks[MarkKey("app", "pids", "max", "up")] = "0"
		tt.marks[MarkKey("app", "pids", "max", "check")] = strconv.FormatInt(rejected, 10)
		runProbeCases(t, "cgroup", tt, "app", []probeCase[*CgroupParams]{
			{"moved since up", counter("up", 0), false, ""},
			{"not since the last check", counter("check", 0), true, "+0"},
		})
	})
	runProbeCases(t, "cgroup", tt, "app", []probeCase[*CgroupParams]{
		{"limit high enough", func(p *CgroupParams) { p.Controller, p.Limit, p.AtLeast = "pids", "pids", "3" }, true, "3"},
		{"limit too low", func(p *CgroupParams) { p.Controller, p.Limit, p.AtLeast = "pids", "pids", "10" }, false, "3"},
	})
}

// The v1 and v2 file layouts, without root: Counter and readLimit pick
// the files that exist.
func TestCounterFiles(t *testing.T) {
	v1 := t.TempDir()
	v2 := t.TempDir()
	files := map[string]string{
		filepath.Join(v1, "memory.oom_control"):    "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
		filepath.Join(v1, "memory.failcnt"):        "17\n",
		filepath.Join(v1, "memory.limit_in_bytes"): "67108864\n",
		filepath.Join(v1, "pids.events"):           "max 5\n",
		filepath.Join(v1, "pids.max"):              "max\n",
		filepath.Join(v1, "cpu.stat"):              "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000\n",
		filepath.Join(v1, "cpu.cfs_quota_us"):      "20000\n",
		filepath.Join(v1, "cpu.cfs_period_us"):     "100000\n",
		filepath.Join(v2, "memory.events"):         "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n",
		filepath.Join(v2, "memory.max"):            "max\n",
		filepath.Join(v2, "pids.events"):           "max 1\n",
		filepath.Join(v2, "pids.max"):              "64\n",
		filepath.Join(v2, "cpu.stat"):              "usage_usec 5\nnr_periods 10\nnr_throttled 6\nthrottled_usec 3000\n",
		filepath.Join(v2, "cpu.max"):               "50000 100000\n",
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	counters := []struct {
		dir, ctrl, name string
		want            int64
	}{
		{v1, "memory", "oom_kill", 3},
		{v1, "memory", "failcnt", 17},
		{v1, "pids", "max", 5},
		{v1, "cpu", "nr_throttled", 4},
		{v1, "cpu", "throttled_time", 2000000},
		{v1, "cpu", "throttled_usec", 2000},
		{v2, "memory", "oom_kill", 2},
		{v2, "memory", "failcnt", 9},
		{v2, "pids", "max", 1},
		{v2, "cpu", "nr_throttled", 6},
		{v2, "cpu", "throttled_usec", 3000},
		{v2, "cpu", "throttled_time", 3000000},
	}
	for _, c := range counters {
		got, err := Counter(c.dir, c.ctrl, c.name)
		if err != nil || got != c.want {
			t.Errorf("Counter(%s, %s, %s) = %d, %v; want %d", filepath.Base(c.dir), c.ctrl, c.name, got, err, c.want)
		}
	}
	if _, err := Counter(v2, "memory", "nosuch"); err == nil {
		t.Error("Counter of an unknown counter: no error")
	}
	limits := []struct {
		dir, limit string
		want       string
	}{
		{v1, "memory", "64Mi"},
		{v1, "pids", "unlimited"},
		{v1, "cpu_quota", "0.2 cores"},
		{v2, "memory", "unlimited"},
		{v2, "pids", "64"},
		{v2, "cpu_quota", "0.5 cores"},
	}
	for _, l := range limits {
		v, err := readLimit(l.dir, l.limit)
		if got := formatLimit(l.limit, v); err != nil || got != l.want {
			t.Errorf("readLimit(%s, %s) = %s, %v; want %s", filepath.Base(l.dir), l.limit, got, err, l.want)
		}
	}
}

// The loader calls Validate; each kind rejects its obvious mistakes with
// the field to point at.
func TestParamsValidate(t *testing.T) {
	tests := []struct {
		kind  string
		set   func(p any)
		field string
	}{
		{"command", func(p any) {}, "argv"},
		{"command", func(p any) { p.(*CommandParams).Argv = []string{"x"}; p.(*CommandParams).Stdout = "(" }, "stdout"},
		{"process", func(p any) { p.(*ProcessParams).StateNot = []string{"Q"} }, "state_not"},
		{"zombies", func(p any) { p.(*ZombiesParams).Max = -1 }, "max"},
		{"connect", func(p any) { p.(*ConnectParams).To = "10.0.0.1" }, "to"},
		{"connect", func(p any) { p.(*ConnectParams).To = "10.0.0.1:80"; p.(*ConnectParams).Expect = "closed" }, "expect"},
		{"resolve", func(p any) {}, "name"},
		{"resolve", func(p any) { p.(*ResolveParams).Name = "a"; p.(*ResolveParams).ExpectAddr = "nope" }, "expect_addr"},
		{"file", func(p any) { p.(*FileParams).Path = "etc/hosts" }, "path"},
		{"port", func(p any) {}, "port"},
		{"port", func(p any) { p.(*PortParams).Port = 80; p.(*PortParams).Proto = "sctp" }, "proto"},
		{"cgroup", func(p any) { p.(*CgroupParams).Controller = "io" }, "controller"},
		{"cgroup", func(p any) { p.(*CgroupParams).Controller = "memory" }, "counter"},
		{"cgroup", func(p any) {
			p.(*CgroupParams).Controller = "memory"
			p.(*CgroupParams).Limit = "pids"
			p.(*CgroupParams).AtLeast = "10"
		}, "limit"},
		{"cgroup", func(p any) {
			p.(*CgroupParams).Controller = "memory"
			p.(*CgroupParams).Limit = "memory"
			p.(*CgroupParams).AtLeast = "lots"
		}, "at_least"},
	}
	for _, tc := range tests {
		k, _ := labs.LookupProbe(tc.kind)
		p := k.NewParams()
		tc.set(p)
		err := p.(labs.ParamValidator).Validate()
		pe, ok := err.(*labs.ParamError)
		if !ok || pe.Field != tc.field {
			t.Errorf("%s: Validate() = %v, want a ParamError on %q", tc.kind, err, tc.field)
		}
	}
	// Templates are not validated before facts exist.
	p := &FileParams{Path: "{{ fact `app.dir` }}/x", Exists: ptr(true)}
	if err := p.Validate(); err != nil {
		t.Errorf("template path rejected: %v", err)
	}
}

func TestProbeCgroupMemoryOOM(t *testing.T) {
	skipUnlessRoot(t)
	dir := makeTestCgroup(t, "memory")
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte("32M"), 0); err != nil {
		t.Fatal(err)
	}
	tt := newTestTarget()
	h := startHost(t, tt, "app")
	h.cgroups["memory"] = dir
	hog, goAhead := startHelper(t, tt, "app", "hog")
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(hog)), 0); err != nil {
		t.Fatal(err)
	}
	before, err := Counter(dir, "memory", "oom_kill")
	if err != nil {
		t.Fatal(err)
	}
	tt.marks[MarkKey("app", "memory", "oom_kill", "up")] = strconv.FormatInt(before, 10)
	runProbeCases(t, "cgroup", tt, "app", []probeCase[*CgroupParams]{
		{"no kill yet", func(p *CgroupParams) { p.Controller, p.Counter = "memory", "oom_kill" }, true, "+0"},
		{"limit", func(p *CgroupParams) { p.Controller, p.Limit, p.AtLeast = "memory", "memory", "32Mi" }, true, ""},
		{"limit too low", func(p *CgroupParams) { p.Controller, p.Limit, p.AtLeast = "memory", "memory", "64Mi" }, false, "32Mi"},
	})
	if _, err := goAhead.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the kernel to OOM-kill the hog", func() bool {
		n, err := Counter(dir, "memory", "oom_kill")
		return err == nil && n > before
	})
	runProbeCases(t, "cgroup", tt, "app", []probeCase[*CgroupParams]{
		{"killed since up", func(p *CgroupParams) { p.Controller, p.Counter = "memory", "oom_kill" }, false, "+1"},
		{"failcnt moved", func(p *CgroupParams) { p.Controller, p.Counter, p.MaxIncrease = "memory", "failcnt", ptr(int64(0)) }, false, ""},
	})
}

func TestCommOf(t *testing.T) {
	for in, want := range map[string]string{
		"worker":            "worker",
		"labctl-supervisor": "labctl-supervis",
		"exactly15-bytes":   "exactly15-bytes",
	} {
		if got := commOf(in); got != want {
			t.Errorf("commOf(%q) = %q, want %q", in, got, want)
		}
	}
}
