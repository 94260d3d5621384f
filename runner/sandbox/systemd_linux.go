//go:build linux

package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/internal/rootfs"
)

// nspawnRunDir is where systemd-nspawn keeps per-machine state on the
// machine (propagate/<machine>, ...); it outlives a killed nspawn.
const nspawnRunDir = "/run/systemd/nspawn"

// helperNspawn places itself in the host's cgroups and execs systemd-nspawn:
// cgroup v1 cannot clone into a cgroup, and nspawn creates its payload/ and
// supervisor/ cgroups below the one it starts in.
const helperNspawn = "sandbox-nspawn"

func init() { reexec.Register(helperNspawn, runNspawnLauncher) }

type systemdRecord struct {
	Dirs    map[string]string `json:"dirs"` // key -> machine-side cgroup dir (trees)
	NetNS   string            `json:"netns"`
	Machine string            `json:"machine"`
}

type nspawnParams struct {
	Dirs []string `json:"dirs"`
	Argv []string `json:"argv"`
}

// systemdReadyTimeout bounds the boot when ctx has no deadline.
const systemdReadyTimeout = 60 * time.Second

func startSystemd(ctx context.Context, spec Spec, rec Recorder) (h *Host, err error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	// Lab-local accounts and mounts are set up by labctl's own init, which
	// a systemd host does not run: refuse them rather than drop them.
	if len(spec.Mounts) > 0 || len(spec.Users) > 0 || len(spec.Groups) > 0 {
		return nil, fmt.Errorf("host %s: lab-local users, groups and mounts are not supported on systemd hosts yet", spec.Name)
	}
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return nil, &SupportError{Msg: "systemd hosts need systemd-nspawn", Hint: "apt-get install systemd-container debootstrap (make deps)"}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, systemdReadyTimeout+5*time.Minute) // the first use builds the rootfs
		defer cancel()
	}
	root, err := rootfs.Ensure(ctx, os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	layout, err := DetectLayout()
	if err != nil {
		return nil, err
	}
	dirs, _, err := planCgroups(layout, spec.Instance, spec.Name)
	if err != nil {
		return nil, err
	}
	// nspawn and the systemd inside it track units in the named systemd
	// hierarchy and in cgroup2: the host gets a subtree there too.
	for key, mnt := range systemdHierarchies() {
		dirs[key] = filepath.Join(mnt, cgroupParent, spec.Instance, spec.Name)
	}
	for _, d := range uniqueDirs(dirs) {
		if _, err := os.Lstat(d); err == nil {
			return nil, fmt.Errorf("host %s: cgroup %s already exists (a stale instance? run labctl gc)", spec.Name, d)
		}
	}
	nsPath := filepath.Join(netnsDir, spec.NetNSName)
	if _, err := os.Lstat(nsPath); err == nil {
		return nil, fmt.Errorf("host %s: network namespace %s already exists (a stale instance? run labctl gc)", spec.Name, nsPath)
	}
	machine := spec.NetNSName
	r := systemdRecord{Dirs: dirs, NetNS: nsPath, Machine: machine}

	var done []func()
	record := func(kind, name string, data any) error {
		raw, err := json.Marshal(data)
		if err != nil {
			return err
		}
		if rec != nil {
			if err := rec(kind, name, data); err != nil {
				return fmt.Errorf("record %s %s: %w", kind, name, err)
			}
		}
		done = append(done, func() {
			cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultTeardown)
			defer cancel()
			if rerr := Release(cleanup, kind, name, raw); rerr != nil {
				err = errors.Join(err, fmt.Errorf("releasing %s %s: %w", kind, name, rerr))
			}
		})
		return nil
	}
	defer func() {
		if err != nil {
			for i := len(done) - 1; i >= 0; i-- {
				done[i]()
			}
		}
	}()

	netnsDone, err := ensureNetnsDir(record)
	if err != nil {
		return nil, err
	}
	defer func() {
		if netnsDone != nil {
			netnsDone()
		}
	}()
	if err := record(KindSystemd, spec.Instance+"/"+spec.Name, r); err != nil {
		return nil, err
	}
	if err := createCgroups(layout, dirs, spec); err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	if err := newNamedNetns(spec.NetNSName); err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	netnsDone()
	netnsDone = nil
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.Name
	}
	argv := []string{"systemd-nspawn",
		"--quiet", "--register=no", "--keep-unit", "--console=passive",
		"--machine=" + machine, "--hostname=" + hostname,
		"--directory=" + root, "--volatile=overlay",
		"--network-namespace-path=" + nsPath,
		"--resolv-conf=off", "--timezone=off", "--link-journal=no",
		"--bind-ro=" + reexec.Self() + ":" + LabctlInHost,
		// systemd sets the hostname from /etc/hostname (the image's, from
		// debootstrap) unless its command line names one.
		"--boot", "systemd.firstboot=off", "systemd.hostname=" + hostname,
	}
	nspawnPID, exited, err := launchNspawn(spec, nspawn, uniqueDirs(dirs), argv)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	boot, cancel := context.WithTimeout(ctx, systemdReadyTimeout)
	defer cancel()
	leader, err := waitLeader(boot, nspawnPID, exited)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w (see %s)", spec.Name, err, filepath.Join(spec.StateDir, "nspawn.log"))
	}
	startTime, err := processStartTime(leader)
	if err != nil {
		return nil, fmt.Errorf("host %s: leader %d: %w", spec.Name, leader, err)
	}
	h = &Host{
		Name: spec.Name, InitPID: leader, InitStartTime: startTime, NetNS: nsPath,
		Cgroups: dirs, Layout: layout, Init: InitSystemd,
	}
	if err := waitSystemRunning(boot, h); err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	if err := placeSystemdFiles(h, spec); err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	return h, nil
}

// systemdHierarchies returns the mountpoints of the named systemd v1
// hierarchy (key "name=systemd") and, on a hybrid layout, of cgroup2
// (key "unified"); on a unified layout planCgroups has that one already.
func systemdHierarchies() map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		m, ok := parseMountinfo(line)
		if !ok || m.root != "/" {
			continue
		}
		switch {
		case m.fstype == "cgroup" && contains(strings.Split(m.superOpts, ","), "name=systemd"):
			if out["name=systemd"] == "" {
				out["name=systemd"] = m.mountpoint
			}
		case m.fstype == "cgroup2" && m.mountpoint != unifiedRoot:
			if out["unified"] == "" {
				out["unified"] = m.mountpoint
			}
		}
	}
	return out
}

// newNamedNetns creates an empty network namespace bound at
// /run/netns/name, on a thread of its own that is discarded if it cannot
// return to the machine's namespace.
func newNamedNetns(name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if err != nil {
			// NewNamed may have switched already: restore before unlocking.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		ns.Close()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked and dies with this goroutine.
			errc <- fmt.Errorf("return to the machine's netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// launchNspawn starts the launcher helper, which joins dirs and execs
// systemd-nspawn, and returns nspawn's PID and a channel that says how it
// ended if it ends while labctl waits (its exit status or signal is all
// there is to go on when it dies before writing to its log).
func launchNspawn(spec Spec, nspawn string, dirs []string, argv []string) (int, <-chan string, error) {
	cmd, sendParams, err := reexec.Command(helperNspawn, "labctl-nspawn", nil, nspawnParams{Dirs: dirs, Argv: argv})
	if err != nil {
		return 0, nil, err
	}
	logFile, err := os.OpenFile(filepath.Join(spec.StateDir, "nspawn.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, nil, fmt.Errorf("nspawn log: %w", err)
	}
	defer logFile.Close()
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = "/"
	cmd.Env = append(cmd.Env, "LABCTL_NSPAWN="+nspawn)
	// Its own session: Ctrl-C where `labctl up` ran must not reach it. No
	// Pdeathsig: the host outlives `labctl up`.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start systemd-nspawn: %w", err)
	}
	exited := make(chan string, 1)
	go func() { // reaped here while labctl runs
		_ = cmd.Wait()
		exited <- cmd.ProcessState.String()
	}()
	if err := sendParams(); err != nil {
		return cmd.Process.Pid, exited, fmt.Errorf("send nspawn parameters: %w", err)
	}
	return cmd.Process.Pid, exited, nil
}

// runNspawnLauncher is the helper: join the host's cgroups, then become
// systemd-nspawn (same PID, so the caller knows nspawn's PID).
func runNspawnLauncher() int {
	var p nspawnParams
	if err := reexec.Params(&p); err != nil {
		fmt.Fprintln(os.Stderr, "labctl-nspawn:", err)
		return 125
	}
	self := strconv.Itoa(os.Getpid())
	for _, d := range p.Dirs {
		// cgroup.procs moves the whole process, every thread.
		if err := writeFile(filepath.Join(d, "cgroup.procs"), self); err != nil {
			fmt.Fprintf(os.Stderr, "labctl-nspawn: join %s: %v\n", d, err)
			return 125
		}
	}
	env := []string{"PATH=" + hostPath}
	if err := unix.Exec(os.Getenv("LABCTL_NSPAWN"), p.Argv, env); err != nil {
		fmt.Fprintln(os.Stderr, "labctl-nspawn: exec systemd-nspawn:", err)
	}
	return 126
}

// waitLeader polls until nspawn has a child that is PID 1 of its own pid
// namespace: the container's systemd.
func waitLeader(ctx context.Context, nspawnPID int, exited <-chan string) (int, error) {
	for {
		select {
		case how := <-exited:
			return 0, fmt.Errorf("systemd-nspawn exited before the container started (%s)", how)
		default:
		}
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", nspawnPID, nspawnPID))
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			if pid > 0 && nsPID(pid) == 1 {
				return pid, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the container's PID 1: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// nsPID is pid's PID in its innermost pid namespace (0 if unknown).
func nsPID(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			fields := strings.Fields(v)
			if len(fields) < 2 {
				return 0
			}
			n, _ := strconv.Atoi(fields[len(fields)-1])
			return n
		}
	}
	return 0
}

// waitSystemRunning polls `systemctl is-system-running` inside the host
// until systemd says the boot is over: running, or degraded (a unit
// failed, which is what many labs are about).
func waitSystemRunning(ctx context.Context, h *Host) error {
	last := ""
	for {
		if !Alive(h) {
			return errors.New("the container's systemd exited during boot")
		}
		out, _ := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(h.InitPID), "-a", "systemctl", "is-system-running").Output()
		last = strings.TrimSpace(string(out))
		if last == "running" || last == "degraded" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for systemd to finish booting (last state %q): %w", last, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// placeSystemdFiles writes the host's resolv.conf, hosts and declared files
// into its volatile overlay (through the leader's root), so they vanish
// with the host.
func placeSystemdFiles(h *Host, spec Spec) error {
	root := fmt.Sprintf("/proc/%d/root", h.InitPID)
	files := append([]File(nil), spec.Files...)
	if spec.ResolvConf != nil {
		files = append(files, File{Path: "/etc/resolv.conf", Content: spec.ResolvConf, Mode: 0o644})
	}
	if spec.EtcHosts != nil {
		files = append(files, File{Path: "/etc/hosts", Content: spec.EtcHosts, Mode: 0o644})
	}
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		_ = os.Remove(p) // a symlink (resolv.conf) must not be followed out of the overlay
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, f.Content, mode); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		if err := os.Lchown(p, f.UID, f.GID); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	return nil
}

// stopSystemd powers the host off: SIGTERM to nspawn (it asks systemd to
// shut down), SIGKILL to the container's PID 1 if it lingers, then the
// common release of its cgroup trees, netns and nspawn's leftovers.
func stopSystemd(ctx context.Context, h *Host) error {
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	if Alive(h) {
		if ppid := parentPID(h.InitPID); ppid > 1 {
			_ = unix.Kill(ppid, unix.SIGTERM)
		}
		grace, cancelGrace := context.WithTimeout(ctx, 3*time.Second)
		for Alive(h) && grace.Err() == nil {
			select {
			case <-grace.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		cancelGrace()
		if Alive(h) {
			if err := unix.Kill(h.InitPID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill the PID 1 of %s: %w", h.Name, err)
			}
		}
	}
	return releaseSystemdHost(ctx, systemdRecord{Dirs: h.Cgroups, NetNS: h.NetNS, Machine: filepath.Base(h.NetNS)})
}

func parentPID(pid int) int {
	f, err := statFields(pid)
	if err != nil || len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func releaseSystemd(ctx context.Context, name string, data json.RawMessage) error {
	var r systemdRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("release systemd host %s: %w", name, err)
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	return releaseSystemdHost(ctx, r)
}

// releaseSystemdHost kills everything in the host's cgroup trees (nspawn
// and the container), removes the trees deepest first, the netns and
// nspawn's per-machine leftovers. Idempotent.
func releaseSystemdHost(ctx context.Context, r systemdRecord) error {
	for _, d := range uniqueDirs(r.Dirs) {
		if !strings.Contains(d, "/"+cgroupParent+"/") {
			return fmt.Errorf("release systemd host: %q is not a labctl cgroup", d)
		}
	}
	if !strings.HasPrefix(r.Machine, "labctl-") || strings.Contains(r.Machine, "/") {
		return fmt.Errorf("release systemd host: bad machine name %q", r.Machine)
	}
	// Zombies left by an earlier, interrupted teardown are no longer in
	// cgroup.procs but still name the tree.
	var lingering []proc
	for _, pid := range processesInTree(r.Dirs) {
		lingering = append(lingering, proc{pid, procStart(pid)})
	}
	var errs []error
	for _, top := range uniqueDirs(r.Dirs) {
		errs = append(errs, RemoveCgroupTree(ctx, top))
	}
	errs = append(errs, waitGone(ctx, lingering))
	for _, top := range uniqueDirs(r.Dirs) {
		instanceDir := filepath.Dir(top)
		if unix.Rmdir(instanceDir) == nil {
			_ = unix.Rmdir(filepath.Dir(instanceDir))
		}
	}
	if r.NetNS != "" {
		errs = append(errs, releaseNetns(r.NetNS))
	}
	// locks/ holds nspawn's image locks, shared by every host of the
	// same image: removed only once empty.
	releaseStaleLocks(filepath.Join(nspawnRunDir, "locks"))
	_ = unix.Rmdir(filepath.Join(nspawnRunDir, "locks"))
	for _, sub := range []string{"propagate", "unix-export", "incoming"} {
		p := filepath.Join(nspawnRunDir, sub, r.Machine)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
		_ = unix.Rmdir(filepath.Join(nspawnRunDir, sub)) // only when no other machine uses it
	}
	_ = unix.Rmdir(nspawnRunDir)
	return errors.Join(errs...)
}

// processesInTree lists processes whose cgroup (in any hierarchy) is in the
// host's tree, including zombies, which have left cgroup.procs but still
// name it (as "... (deleted)" once it is removed).
func processesInTree(dirs map[string]string) []int {
	var rels []string
	for _, d := range uniqueDirs(dirs) {
		if i := strings.Index(d, "/"+cgroupParent+"/"); i >= 0 {
			rels = append(rels, d[i:])
		}
	}
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			_, path, _ := strings.Cut(line, ":")
			_, path, _ = strings.Cut(path, ":")
			if matchesTree(path, rels) {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func matchesTree(path string, rels []string) bool {
	path = strings.TrimSuffix(path, " (deleted)")
	for _, rel := range rels {
		if path == rel || strings.HasPrefix(path, rel+"/") {
			return true
		}
	}
	return false
}

// releaseStaleLocks removes lock files no process holds, as nspawn does on
// a clean exit (a SIGKILLed nspawn leaves its lock file behind): a lock
// that can be taken exclusively is held by no one.
func releaseStaleLocks(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		// systemd's lock files may be held with flock or with OFD record
		// locks depending on the version: free only if both can be taken.
		ofd := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil && unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &ofd) == nil {
			_ = os.Remove(p)
		}
		unix.Close(fd)
	}
}
