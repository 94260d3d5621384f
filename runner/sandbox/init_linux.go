//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
)

const (
	helperInit  = "sandbox-init"
	helperEnter = "sandbox-enter"
	helperSpawn = "sandbox-spawn"
	helperMount = "sandbox-mount"

	// initComm is what ps shows as the host's PID 1.
	initComm = "labctl-init"

	// File descriptors of the init besides reexec's params pipe (fd 3).
	goFD     = 4 // Start writes one byte when the init sits in its cgroups
	statusFD = 5 // the init writes "ok" or the error that stopped its setup
)

func init() {
	reexec.Register(helperInit, runInit)
	reexec.Register(helperEnter, runEnter)
	reexec.Register(helperSpawn, runSpawn)
	reexec.Register(helperMount, runMount)
	// Namespaces, capabilities and the cgroup namespace root are
	// per-thread. /proc/PID/ns/* (what Command enters) shows the main
	// thread, so both helpers must do their work there: an init function
	// that locks the main goroutine keeps it on the main thread through
	// main and reexec.Init.
	switch os.Getenv(reexec.EnvHelper) {
	case helperInit, helperEnter, helperMount:
		runtime.LockOSThread()
	}
}

// initParams is the init's setup plan, computed by Start.
type initParams struct {
	Lab         string      `json:"lab"`
	Host        string      `json:"host"`
	Hostname    string      `json:"hostname"`
	Layout      Layout      `json:"layout"`
	Hierarchies []hierarchy `json:"hierarchies,omitempty"` // v1 only
	Overlays    []overlay   `json:"overlays"`
	Hide        []string    `json:"hide"` // machine dirs covered by an empty read-only tmpfs
}

// runInit is the host's PID 1: set up the private view, report, then reap.
func runInit() int {
	status := os.NewFile(statusFD, "status")
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "labctl-init: %v\n", err)
		if status != nil {
			fmt.Fprintf(status, "error: %v\n", err)
		}
		return 1
	}
	if status == nil {
		return fail(errors.New("no status pipe"))
	}
	var p initParams
	if err := reexec.Params(&p); err != nil {
		return fail(err)
	}
	_ = reexec.SetComm(initComm)
	// Wait until Start has moved this process into the host's cgroups (v1
	// cannot clone into a cgroup). EOF means Start gave up: exit.
	goPipe := os.NewFile(goFD, "go")
	var b [1]byte
	if n, _ := goPipe.Read(b[:]); n != 1 {
		return fail(errors.New("start aborted before the host was in its cgroups"))
	}
	goPipe.Close()
	if err := setupHost(p); err != nil {
		return fail(err)
	}
	if _, err := status.WriteString("ok\n"); err != nil {
		return 1 // Start is gone; it will release everything.
	}
	status.Close()
	return reap()
}

// setupHost builds the host's private view, in this order: everything
// private first, so nothing below propagates to the machine.
func setupHost(p initParams) error {
	if unix.Gettid() != unix.Getpid() {
		return errors.New("setup must run on the main thread (the one /proc/PID/ns shows)")
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	// Start moved this process into its cgroups before releasing it, so
	// the new cgroup namespace is rooted at the host's own cgroup.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("new cgroup namespace: %w", err)
	}
	if err := unix.Sethostname([]byte(p.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	const kernelFS = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("proc", "/proc", "proc", kernelFS, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	// /proc/sys read-only except net: sysctls outside net act on the whole
	// machine, those under net on the host's own network namespace.
	if err := bindReadOnly("/proc/sys"); err != nil {
		return err
	}
	if err := unix.Mount("/proc/sys/net", "/proc/sys/net", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /proc/sys/net: %w", err)
	}
	// The bind copied the read-only flag of /proc/sys: lift it here only.
	if err := unix.Mount("", "/proc/sys/net", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("make /proc/sys/net writable: %w", err)
	}
	// A fresh sysfs shows this network namespace's interfaces in
	// /sys/class/net, as on a real machine.
	if err := unix.Mount("sysfs", "/sys", "sysfs", kernelFS, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	if err := mountCgroupView(p); err != nil {
		return err
	}
	for _, ov := range p.Overlays {
		data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", ov.Target, ov.Upper, ov.Work)
		if err := unix.Mount("overlay", ov.Target, "overlay", 0, data); err != nil {
			return fmt.Errorf("mount private %s (overlay %s): %w", ov.Target, data, err)
		}
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	// Hidden last: the overlays above have their upper layers in the
	// state dir under /run/labctl.
	for _, dir := range p.Hide {
		if err := hide(dir); err != nil {
			return err
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return dropCaps()
}

func bindReadOnly(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", dir, err)
	}
	return nil
}

// mountCgroupView shows the host its own cgroup at /sys/fs/cgroup: in a
// cgroup namespace a cgroup mount's root is the namespace's root.
func mountCgroupView(p initParams) error {
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if p.Layout == CgroupV2 {
		if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags, ""); err != nil {
			return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
		}
		return nil
	}
	if err := unix.Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", flags, "mode=755"); err != nil {
		return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
	}
	for _, h := range p.Hierarchies {
		dir := filepath.Join("/sys/fs/cgroup", filepath.Base(h.Mountpoint))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup view: %w", err)
		}
		if err := unix.Mount("cgroup", dir, "cgroup", flags, h.Options); err != nil {
			return fmt.Errorf("mount %s (-o %s): %w", dir, h.Options, err)
		}
		// Combined hierarchies (cpu,cpuacct) get one link per controller,
		// as systemd lays them out.
		if len(h.Controllers) > 1 {
			for _, c := range h.Controllers {
				if c != filepath.Base(dir) {
					if err := os.Symlink(filepath.Base(dir), filepath.Join("/sys/fs/cgroup", c)); err != nil && !errors.Is(err, os.ErrExist) {
						return fmt.Errorf("cgroup view: %w", err)
					}
				}
			}
		}
	}
	// The view is the host's: nobody creates dirs next to the controllers.
	if err := unix.Mount("", "/sys/fs/cgroup", "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, "mode=755"); err != nil {
		return fmt.Errorf("make /sys/fs/cgroup read-only: %w", err)
	}
	return nil
}

// hide covers dir with an empty read-only tmpfs. Mounts below it are
// detached first: a copy of another host's netns mount in this mount
// namespace would keep that network namespace alive after its host is gone.
func hide(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mounts, err := mountpoints()
	if err != nil {
		return err
	}
	var below []string
	for _, m := range mounts {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			below = append(below, m)
		}
	}
	// Deepest first.
	sort.Sort(sort.Reverse(sort.StringSlice(below)))
	for _, m := range below {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("detach %s: %w", m, err)
		}
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755,size=4k"); err != nil {
		return fmt.Errorf("hide %s: %w", dir, err)
	}
	return nil
}

// reap is PID 1's job: every orphan of the host is re-parented here and
// must not stay a zombie. SIGTERM ends the host.
func reap() int {
	// Signals the learner may send to PID 1 that would otherwise make the
	// Go runtime exit; the kernel already drops those with no handler.
	signal.Ignore(unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
		unix.SIGPIPE, unix.SIGALRM, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM)
	reapAll()
	for sig := range sigs {
		if sig == unix.SIGTERM {
			// kill(-1) from a pid namespace's init reaches every other
			// process of the namespace.
			_ = unix.Kill(-1, unix.SIGKILL)
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				var ws unix.WaitStatus
				if _, err := unix.Wait4(-1, &ws, 0, nil); errors.Is(err, unix.ECHILD) {
					break
				}
			}
			return 0
		}
		reapUnlessPaused() // process.init-no-reap can pause reaping (noreap_linux.go)
	}
	return 0
}

func reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
