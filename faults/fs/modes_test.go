package fs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	fsfaults "github.com/labctl/labctl/faults/fs"
	"github.com/labctl/labctl/internal/testenv"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

// upFile brings up a lab file that is not in the catalog (testdata).
func upFile(t *testing.T, file string) (*labs.Lab, *runner.Instance) {
	t.Helper()
	lab, err := labs.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	in, err := runner.Up(context.Background(), lab, runner.UpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Down(context.Background()) })
	return lab, in
}

// eventually polls the real condition; the deadline only stops a test
// whose condition never comes.
func eventually(t *testing.T, what string, cond func() bool, last func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened; last seen:\n%s", what, last())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPermissionsModes brings up every break of fs.permissions: the
// service logs permission denied for the path it tried, the standard
// tools show the cause, the fix heals it (the service logs recovered),
// and `labctl test` (broken, wrong fixes, solve) passes for the labs that
// only exist here.
func TestPermissionsModes(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		file    string // testdata lab, or a catalog lab (tested elsewhere by TestLabsSelfTest)
		catalog bool
		tried   string   // the path the log names: "config" or "state" (<data>/state.db)
		tool    []string // run in the host; "PATH", "CONFIG" become the svc.path, svc.config facts
		want    string   // regexp its output must match
		stat    string   // stat -c '%a %U %G' of svc.path
		fix     []string // "PATH", "USER", "GROUP", "MODE" become facts
	}{
		{
			file: "config-group", tried: "config",
			tool: []string{"ls", "-l", "PATH"}, want: `^-rw-r----- 1 root root .* PATH\n$`,
			stat: "640 root root", fix: []string{"chgrp", "GROUP", "PATH"},
		},
		{
			// The file is fine; the directory on the way is not searchable.
			file: "config-dir", tried: "config",
			tool: []string{"namei", "-l", "CONFIG"}, want: `(?m)^drwx------ root root +maild$`,
			stat: "700 root root", fix: []string{"chmod", "MODE", "PATH"},
		},
		{
			file: "data-mode", tried: "state",
			tool: []string{"ls", "-ld", "PATH"}, want: `^dr-xr-x--- \d+ stock stock .* PATH\n$`,
			stat: "550 stock stock", fix: []string{"chmod", "MODE", "PATH"},
		},
		{
			file: "data-unwritable", catalog: true, tried: "state",
			tool: []string{"ls", "-ld", "PATH"}, want: `^drwxr-xr-x \d+ root root .* PATH\n$`,
			stat: "755 root root", fix: []string{"chown", "USER:GROUP", "PATH"},
		},
	} {
		t.Run(c.file, func(t *testing.T) {
			testenv.PrivateStateRoot(t)
			file := filepath.Join("testdata", c.file+".yaml")
			if c.catalog {
				file = filepath.Join("..", "..", "labs", "fs", c.file+".yaml")
			}
			lab, in := upFile(t, file)
			facts := strings.NewReplacer(
				"PATH", fact(t, in, "svc.path"), "CONFIG", fact(t, in, "svc.config"),
				"USER", fact(t, in, "svc.user"), "GROUP", fact(t, in, "svc.group"), "MODE", fact(t, in, "svc.mode"),
			)
			subst := func(argv []string) []string {
				out := make([]string, len(argv))
				for i, a := range argv {
					out[i] = facts.Replace(a)
				}
				return out
			}

			tried := fact(t, in, "svc.config")
			if c.tried == "state" {
				tried = fact(t, in, "svc.data") + "/state.db"
			}
			logFile := fact(t, in, "svc.log")
			readLog := func() string { return inHost(t, in, "cat", logFile) }
			if log := readLog(); !strings.Contains(log, "open "+tried+": permission denied") {
				t.Errorf("the log does not name %s as refused:\n%s", tried, log)
			}
			// The refusal is the kernel's, judged against the lab user.
			if got := strings.TrimSpace(inHost(t, in, "ps", "-o", "user=", "-p", fact(t, in, "svc.ns_pid"))); got != fact(t, in, "svc.user") {
				t.Errorf("the service runs as %q, want %q", got, fact(t, in, "svc.user"))
			}
			out := inHost(t, in, subst(c.tool)...)
			want := strings.ReplaceAll(c.want, "PATH", regexp.QuoteMeta(fact(t, in, "svc.path")))
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("%s:\n%s\nwant it to match %s", strings.Join(subst(c.tool), " "), out, want)
			}
			if got := strings.TrimSpace(inHost(t, in, "stat", "-c", "%a %U %G", fact(t, in, "svc.path"))); got != c.stat {
				t.Errorf("stat %s = %q, want %q", fact(t, in, "svc.path"), got, c.stat)
			}

			inHost(t, in, subst(c.fix)...)
			eventually(t, "the service recovering after "+strings.Join(subst(c.fix), " "), func() bool {
				return strings.Contains(readLog(), "recovered")
			}, readLog)
			if err := in.Down(context.Background()); err != nil {
				t.Fatal(err)
			}

			if c.catalog {
				return
			}
			res := runner.SelfTest(context.Background(), lab, runner.TestOptions{Run: 1})
			if p := res.Failed(); p != nil {
				t.Fatalf("labctl test %s: phase %s %s: %s", file, p.Phase, p.Name, p.Message)
			}
		})
	}
}

// TestProcDetectiveSeenByTools: what the lab asks is what the standard
// looks into /proc show, inside the host, and equals the facts.
func TestProcDetectiveSeenByTools(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	in := up(t, "proc-detective")
	pid := fact(t, in, "cache.ns_pid")
	proc := "/proc/" + pid + "/"
	match := func(what, out, pattern string) {
		t.Helper()
		if !regexp.MustCompile(pattern).MatchString(out) {
			t.Errorf("%s:\n%s\nwant it to match %s", what, out, pattern)
		}
	}

	if got := strings.TrimSpace(inHost(t, in, "ps", "-o", "user=", "-p", pid)); got != fact(t, in, "cache.user") {
		t.Errorf("ps -o user= = %q, want %q", got, fact(t, in, "cache.user"))
	}
	nofile := regexp.QuoteMeta(fact(t, in, "cache.nofile"))
	match("cat "+proc+"limits", inHost(t, in, "cat", proc+"limits"), `(?m)^Max open files +`+nofile+` +`+nofile+` +files`)
	match("ls -l "+proc+"fd", inHost(t, in, "ls", "-l", proc+"fd"), `(?m) -> `+regexp.QuoteMeta(fact(t, in, "cache.open_file"))+`$`)
	env := strings.Split(inHost(t, in, "cat", proc+"environ"), "\x00")
	if want := "APP_TOKEN=" + fact(t, in, "cache.token"); !slices.Contains(env, want) {
		t.Errorf("%senviron: %q, want %s", proc, env, want)
	}

	cg := fact(t, in, "cache.cgroup")
	if !regexp.MustCompile(`^/system\.slice/run-r[0-9a-f]{8}\.scope$`).MatchString(cg) {
		t.Errorf("cache.cgroup = %q, want a cgroup of its own", cg)
	}
	cgLine := `(?m)^\d+:[^:\n]*:` + regexp.QuoteMeta(cg) + `$`
	match("cat "+proc+"cgroup", inHost(t, in, "cat", proc+"cgroup"), cgLine)
	if out := inHost(t, in, "cat", "/proc/1/cgroup"); strings.Contains(out, cg) {
		t.Errorf("PID 1 of the host is in %s too:\n%s", cg, out)
	}
	// The fact is the kernel's: seen from the machine, the same cgroup is
	// below labctl's tree.
	machine, err := os.ReadFile("/proc/" + fact(t, in, "cache.pid") + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	match("/proc/PID/cgroup seen from the machine", string(machine), `(?m)^\d+:[^:\n]*:/labctl/[^\n]*`+regexp.QuoteMeta(cg)+`$`)
	dirs := cgroupDirs(string(machine), cg)
	if len(dirs) == 0 {
		t.Fatalf("no cgroup directory of %s on the machine", cg)
	}

	ns := inHost(t, in, "ls", "-l", proc+"ns")
	match("ls -l "+proc+"ns", ns, `(?m) net -> net:\[`+regexp.QuoteMeta(fact(t, in, "cache.netns"))+`\]$`)
	match("ls -l /proc/1/ns", inHost(t, in, "ls", "-l", "/proc/1/ns"), `(?m) net -> net:\[`+regexp.QuoteMeta(fact(t, in, "cache.init_netns"))+`\]$`)
	if fact(t, in, "cache.netns") == fact(t, in, "cache.init_netns") {
		t.Error("the service shares PID 1's network namespace")
	}

	// Down removes the cgroups the fault made.
	if err := in.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after down (%v)", d, err)
		}
	}
}

// cgroupDirs maps the lines of a machine-side /proc/PID/cgroup that end
// in rel to their directories under /sys/fs/cgroup.
func cgroupDirs(procCgroup, rel string) []string {
	var out []string
	for _, line := range strings.Split(procCgroup, "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || !strings.HasSuffix(f[2], rel) {
			continue
		}
		sub := "" // v2: the unified root
		if f[1] != "" {
			sub = strings.TrimPrefix(strings.Split(f[1], ",")[0], "name=")
			if _, err := os.Stat("/sys/fs/cgroup/" + sub); err != nil {
				sub = f[1] // mounted together, e.g. cpu,cpuacct
			}
		} else if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
			sub = "unified"
		}
		out = append(out, filepath.Join("/sys/fs/cgroup", sub, f[2]))
	}
	return out
}

// TestStickyRefusesOverlay: without a lab-local filesystem for its
// directory, fs.sticky refuses before making anything, so the machine's
// disk (the overlay's upper layer) never holds a world-writable directory.
func TestStickyRefusesOverlay(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	lab := testenv.CatalogLab(t, "fs", "sticky-missing")
	h := lab.HostByName("app")
	if len(h.Mounts) == 0 {
		t.Fatal("sticky-missing declares no mount; the test would prove nothing")
	}
	h.Mounts = nil // what the loader's host check would refuse
	in, err := runner.Up(context.Background(), lab, runner.UpOptions{})
	if err == nil {
		_ = in.Down(context.Background())
		t.Fatal("up succeeded with the shared directory on the host's overlay")
	}
	dir := lab.Faults[0].With.(*fsfaults.StickyParams).Dir
	for _, want := range []string{"dir: " + dir + " (on ", "not on a lab-local filesystem"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("up: %v\nwant it to say %q", err, want)
		}
	}
}

// TestValidateHostNeedsLabLocal is the check a lab file gets before
// anything runs: fs.sticky's directory and fs.setuid's file must be on a
// filesystem the host declares (or below its /tmp). It needs no root.
func TestValidateHostNeedsLabLocal(t *testing.T) {
	host := func(mounts ...string) *labs.Host {
		h := &labs.Host{Name: "app"}
		for _, m := range mounts {
			h.Mounts = append(h.Mounts, labs.MountSpec{Path: m, Type: "tmpfs"})
		}
		return h
	}
	for _, c := range []struct {
		name   string
		params interface{ ValidateHost(*labs.Host) error }
		host   *labs.Host
		field  string // "" = valid
	}{
		{"sticky on its mount", &fsfaults.StickyParams{Dir: "/srv/exchange"}, host("/srv/exchange"), ""},
		{"sticky below a mount", &fsfaults.StickyParams{Dir: "/srv/x/shared"}, host("/var/log", "/srv"), ""},
		{"sticky below /tmp", &fsfaults.StickyParams{Dir: "/tmp/shared"}, host(), ""},
		{"sticky on the overlay", &fsfaults.StickyParams{Dir: "/srv/exchange"}, host(), "dir"},
		{"sticky beside a mount", &fsfaults.StickyParams{Dir: "/srv/exchange"}, host("/srv/ex"), "dir"},
		{"sticky above a mount", &fsfaults.StickyParams{Dir: "/srv"}, host("/srv/exchange"), "dir"},
		{"sticky on /tmp's neighbour", &fsfaults.StickyParams{Dir: "/tmpx/shared"}, host(), "dir"},
		{"setuid on its mount", &fsfaults.SetuidParams{Path: "/opt/vendor/lib/x"}, host("/opt/vendor"), ""},
		{"setuid on the overlay", &fsfaults.SetuidParams{Path: "/usr/local/bin/x"}, host("/opt/vendor"), "path"},
		{"setuid as the mount point", &fsfaults.SetuidParams{Path: "/opt/vendor"}, host("/opt/vendor"), "path"},
	} {
		err := c.params.ValidateHost(c.host)
		var pe *labs.ParamError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v, want valid", c.name, err)
		case c.field != "" && !errors.As(err, &pe):
			t.Errorf("%s: %v, want a ParamError on %s", c.name, err, c.field)
		case c.field != "" && (pe.Field != c.field || !strings.Contains(pe.Msg, "lab-local filesystem of host app")):
			t.Errorf("%s: %v, want it on %s, naming the host", c.name, err, c.field)
		}
	}
	// The catalog labs pass it.
	for _, name := range []string{"sticky-missing", "setuid-audit"} {
		lab := testenv.CatalogLab(t, "fs", name)
		f := lab.Faults[0]
		if err := f.With.(interface{ ValidateHost(*labs.Host) error }).ValidateHost(lab.HostByName(f.Host)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
