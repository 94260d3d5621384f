package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner/sandbox"
)

// ProcServiceParams are the `with:` of fs.proc-service.
type ProcServiceParams struct {
	User    string `yaml:"user" json:"user" doc:"the lab user it runs as" required:"true"`
	Service string `yaml:"service,omitempty" json:"service,omitempty" doc:"its name as ps shows it (default cachesrv)"`
	Dir     string `yaml:"dir,omitempty" json:"dir,omitempty" doc:"directory of its data files, one of which it holds open (default /srv/<service>)"`
}

// Validate checks the params before anything is created.
func (p *ProcServiceParams) Validate() error {
	switch {
	case !accountRe.MatchString(p.User):
		return &labs.ParamError{Field: "user", Msg: "want a lab user's name"}
	case !commRe.MatchString(p.Service):
		return &labs.ParamError{Field: "service", Msg: "want 1-15 letters, digits, '.', '_' or '-' (a process name)"}
	case p.Dir != "" && !validPath(p.Dir):
		return &labs.ParamError{Field: "dir", Msg: "want an absolute, clean path"}
	}
	return nil
}

// procSetup is what the service sets up for /proc to show; every value
// is drawn from the instance's seed, so none can be guessed.
type procSetup struct {
	NoFile   uint64   `json:"nofile"`
	Token    string   `json:"token"`
	OpenFile string   `json:"open_file"`
	Home     string   `json:"home"`
	Stage2   bool     `json:"stage2,omitempty"`
	Env      []string `json:"env,omitempty"`
}

type procServiceKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "fs.proc-service",
		Doc:       "a service whose limits, open files, environment, cgroup and network namespace only /proc tells (a /proc detective lab; nothing is broken)",
		NewParams: func() any { return &ProcServiceParams{Service: "cachesrv"} },
		Facts: []labs.FactSpec{
			{Name: "service", Doc: "its name"},
			{Name: "pid", Doc: "its machine-side PID"},
			{Name: "ns_pid", Doc: "its PID inside the host"},
			{Name: "user", Doc: "the user it runs as"},
			{Name: "nofile", Doc: "its limit of open files (soft = hard)"},
			{Name: "token", Doc: "the value of APP_TOKEN in its environment"},
			{Name: "open_file", Doc: "the data file it holds open"},
			{Name: "dir", Doc: "the directory of its data files"},
			{Name: "cgroup", Doc: "the cgroup it was moved into, as /proc/PID/cgroup shows it inside the host (e.g. /system.slice/run-r1a2b3c4d.scope)"},
			{Name: "netns", Doc: "the inode number of its own network namespace"},
			{Name: "init_netns", Doc: "the inode number of the host's (PID 1's) network namespace"},
		},
	}, procServiceKind{})
}

func (procServiceKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*ProcServiceParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	dir := p.Dir
	if dir == "" {
		dir = "/srv/" + p.Service
	}
	rng := rand.New(rand.NewPCG(uint64(env.Seed()), 0x70726f63))
	files := make([]string, 6)
	for i := range files {
		files[i] = filepath.Join(dir, fmt.Sprintf("shard-%02d.db", rng.IntN(90)+10+i*100))
	}
	setup := &procSetup{
		NoFile:   uint64(256 + rng.IntN(64)*8),
		Token:    fmt.Sprintf("%08x", rng.Uint32()),
		OpenFile: files[rng.IntN(len(files))],
		Home:     "/home/" + p.User,
	}
	// Drawn after the others, so a seed gives the same values as before.
	scope := fmt.Sprintf("/system.slice/run-r%08x.scope", rng.Uint32())
	if err := run(ctx, h, "mkdir", "-p", dir); err != nil {
		return nil, err
	}
	for _, file := range files {
		if err := run(ctx, h, "install", "-o", p.User, "-m", "0640", "/dev/null", file); err != nil {
			return nil, err
		}
	}
	if err := run(ctx, h, "chown", p.User, dir); err != nil {
		return nil, err
	}
	log := "/var/log/" + p.Service + ".log"
	pid, err := startService(ctx, h, faults.ServiceSpec{
		Helper: serviceHelper, Comm: p.Service, Args: []string{"--data", dir},
		Params: serviceParams{Role: roleProc, Name: p.Service, User: p.User, Log: log, Proc: setup},
	})
	st := procState{serviceState: serviceState{PIDs: []int{pid}, Names: []string{p.Service}}}
	applied := &faults.Applied{}
	applied.State, _ = json.Marshal(st)
	if err != nil {
		return applied, err
	}
	ns, err := nsPID(pid)
	if err != nil {
		return applied, err
	}
	// Moved as `systemd-run --scope` would have started it. Each directory
	// goes into the state before it is made, so Revert finds it.
	err = joinCgroup(h, pid, scope, func(d string) {
		st.Cgroups = append(st.Cgroups, d)
		applied.State, _ = json.Marshal(st)
	})
	if err != nil {
		return applied, err
	}
	// Observable: the service holds its file open, in its own netns, and
	// the kernel shows it in its cgroup to a reader inside the host.
	var netns, initNetns, cgroup string
	if err := poll(ctx, p.Service+" to hold "+setup.OpenFile+" in "+scope, func() (bool, error) {
		netns, initNetns = nsInode(pid, "net"), nsInode(h.InitPID(), "net")
		cgroup = cgroupInHost(ctx, h, ns)
		return netns != "" && netns != initNetns && holds(pid, setup.OpenFile) && cgroup == scope, nil
	}); err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"service": p.Service, "pid": strconv.Itoa(pid), "ns_pid": strconv.Itoa(ns), "user": p.User,
		"nofile": strconv.FormatUint(setup.NoFile, 10), "token": setup.Token, "open_file": setup.OpenFile,
		"dir": dir, "netns": netns, "init_netns": initNetns, "cgroup": cgroup,
	}
	return applied, nil
}

// procState is serviceState plus the cgroups Apply made, parents first.
type procState struct {
	serviceState
	Cgroups []string `json:"cgroups,omitempty"`
}

// Revert stops the service, then removes its cgroups, deepest first, once
// the kernel has let go of the dead process. The host's release removes
// the whole tree anyway (after a crash, that is what cleans them up), but
// a revert undoes its own work.
func (procServiceKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	stopAll(state)
	var s procState
	if len(state) == 0 || json.Unmarshal(state, &s) != nil {
		return nil
	}
	// Deepest first; RemoveCgroupTree refuses anything outside labctl's
	// tree and waits until the killed service is reaped.
	for i := len(s.Cgroups) - 1; i >= 0; i-- {
		if err := sandbox.RemoveCgroupTree(ctx, s.Cgroups[i]); err != nil {
			return err
		}
	}
	return nil
}

// cgroupControllers are those a host has its own cgroup for (v1); on v2
// they all name the one unified directory.
var cgroupControllers = []string{"memory", "pids", "cpu", "cpuacct", "freezer"}

// joinCgroup moves pid into the child cgroup rel of the host's cgroup, in
// every hierarchy the host has one in. made is called with each directory
// before it is created.
func joinCgroup(h faults.Host, pid int, rel string, made func(string)) error {
	seen := map[string]bool{}
	for _, c := range cgroupControllers {
		base := h.CgroupDir(c)
		if base == "" || seen[base] {
			continue
		}
		seen[base] = true
		// Each level of rel, so every directory made is recorded.
		d := base
		for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
			d = filepath.Join(d, part)
			if _, err := os.Stat(d); err == nil {
				continue
			}
			made(d)
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", d, err)
			}
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("move %d into %s: %w", pid, d, err)
		}
	}
	if len(seen) == 0 {
		return errors.New("the host has no cgroup to nest the service's in")
	}
	return nil
}

// cgroupInHost is the service's cgroup as a reader inside the host sees
// it in /proc/PID/cgroup (relative to the host's cgroup namespace): the
// memory hierarchy's line on v1, the unified one on v2.
func cgroupInHost(ctx context.Context, h faults.Host, nsPID int) string {
	out, err := h.Command(ctx, "cat", fmt.Sprintf("/proc/%d/cgroup", nsPID)).Output()
	if err != nil {
		return ""
	}
	return parseProcCgroup(string(out))
}

// parseProcCgroup picks the path of the memory controller's line, else
// of the unified hierarchy's (0::PATH).
func parseProcCgroup(s string) string {
	unified := ""
	for _, line := range strings.Split(s, "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "memory" {
				return f[2]
			}
		}
		if f[0] == "0" && f[1] == "" {
			unified = f[2]
		}
	}
	return unified
}

// nsInode is the inode number of a process's namespace, as in
// readlink /proc/PID/ns/net = net:[4026532001].
func nsInode(pid int, ns string) string {
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(l, ns+":["), "]")
}

// holds reports whether pid has path open (as the host sees the path).
func holds(pid int, path string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && t == path {
			return true
		}
	}
	return false
}

// procStage1 gives the service what must exist before its program
// starts: a limit of open files (soft = hard, so the Go runtime of the
// next stage cannot raise it), a network namespace of its own and an
// environment, which /proc/PID/environ shows as it was at exec. It then
// execs this binary again, from the thread that entered the namespace
// (exec keeps that thread's namespaces), with the parameters on fd 3.
func procStage1(p serviceParams) int {
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "%s: %s: %v\n", p.Name, what, err)
		return 1
	}
	runtime.LockOSThread()
	lim := &unix.Rlimit{Cur: p.Proc.NoFile, Max: p.Proc.NoFile}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, lim); err != nil {
		return fail("setrlimit", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fail("unshare net", err)
	}
	p.Proc.Stage2 = true
	data, err := json.Marshal(p)
	if err != nil {
		return fail("params", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail("pipe", err)
	}
	if _, err := w.Write(data); err != nil {
		return fail("params", err)
	}
	w.Close()
	// fd 3 without close-on-exec survives the exec. The pipe may already
	// be fd 3 (the first params pipe was closed), where dup3 refuses.
	if fd := int(r.Fd()); fd == reexec.ParamsFD {
		if _, err := unix.FcntlInt(r.Fd(), unix.F_SETFD, 0); err != nil {
			return fail("params fd", err)
		}
	} else if err := unix.Dup3(fd, reexec.ParamsFD, 0); err != nil {
		return fail("dup params", err)
	}
	env := []string{
		reexec.EnvHelper + "=" + serviceHelper,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + p.Proc.Home, "LANG=C.UTF-8", "APP_ENV=production",
		"APP_TOKEN=" + p.Proc.Token, "APP_CACHE_MB=64",
	}
	// /proc/self/exe: the binary's path may not exist in the host's view.
	return fail("exec", syscall.Exec("/proc/self/exe", os.Args, env))
}

// procIdle holds its data file open and waits, as a cache server between
// requests does.
func procIdle(l *serviceLog, p serviceParams) {
	f, err := os.Open(p.Proc.OpenFile)
	if err != nil {
		l.printf("error: %v", err)
		os.Exit(1)
	}
	defer f.Close()
	l.printf("serving from %s", filepath.Dir(p.Proc.OpenFile))
	for {
		time.Sleep(time.Hour)
	}
}
