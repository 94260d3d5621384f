//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// cgroupRecord is what the ledger keeps of a host's cgroups: enough to kill
// what is left in them and remove them after a crash.
type cgroupRecord struct {
	Layout Layout            `json:"layout"`
	Dirs   map[string]string `json:"dirs"` // controller -> machine-side dir
}

// cgroupParent is the directory under every hierarchy root that holds all
// of labctl's cgroups. It sits at the root, not under labctl's own cgroup,
// because the caller's shell may live in a nested cgroup with its own limits.
const cgroupParent = "labctl"

// planCgroups returns the host's cgroup directories, controller -> dir.
// Controllers mounted together (cpu,cpuacct) map to the same dir.
func planCgroups(layout Layout, instance, host string) (map[string]string, []hierarchy, error) {
	rel := filepath.Join(cgroupParent, instance, host)
	dirs := map[string]string{}
	if layout == CgroupV2 {
		dirs["unified"] = filepath.Join(unifiedRoot, rel)
		return dirs, nil, nil
	}
	hs, err := v1Hierarchies()
	if err != nil {
		return nil, nil, err
	}
	for _, h := range hs {
		for _, c := range h.Controllers {
			dirs[c] = filepath.Join(h.Mountpoint, rel)
		}
	}
	for _, want := range v1Required {
		if dirs[want] == "" {
			return nil, nil, &SupportError{Msg: fmt.Sprintf("the %s cgroup controller is not mounted", want), Hint: "see labctl's CheckSupport"}
		}
	}
	return dirs, hs, nil
}

// uniqueDirs returns the distinct directories of a controller map, sorted
// so that the order of operations is reproducible.
func uniqueDirs(dirs map[string]string) []string {
	set := map[string]bool{}
	for _, d := range dirs {
		set[d] = true
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// createCgroups makes the host's cgroup directories (and the labctl and
// instance parents when missing) and writes the limits.
func createCgroups(layout Layout, dirs map[string]string, spec Spec) error {
	for _, dir := range uniqueDirs(dirs) {
		if err := mkdirCgroup(layout, dir); err != nil {
			return err
		}
	}
	if layout == CgroupV2 {
		return limitsV2(dirs["unified"], spec)
	}
	return limitsV1(dirs, spec)
}

// mkdirCgroup creates dir and its two labctl-owned parents. On v2 the
// parents must delegate the controllers to their children.
func mkdirCgroup(layout Layout, dir string) error {
	instanceDir := filepath.Dir(dir)
	labctlDir := filepath.Dir(instanceDir)
	// Release of the last host of another instance removes empty parents;
	// if it does so between two of these mkdirs, the next one fails with
	// ENOENT and the whole chain is simply made again.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = mkdirChain(layout, labctlDir, instanceDir, dir); !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return err
}

func mkdirChain(layout Layout, labctlDir, instanceDir, dir string) error {
	if layout == CgroupV2 {
		// The root must delegate too: systemd as PID 1 enables there only
		// the controllers its own units use (memory and pids, not cpu).
		if err := enableControllers(filepath.Dir(labctlDir)); err != nil {
			return err
		}
	}
	for _, d := range []string{labctlDir, instanceDir} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if layout == CgroupV2 {
			if err := enableControllers(d); err != nil {
				return err
			}
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	return nil
}

// enableControllers delegates memory, pids and cpu (those the parent has)
// to the children of d.
func enableControllers(d string) error {
	data, err := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read controllers of %s: %w", d, err)
	}
	avail := strings.Fields(string(data))
	var enable []string
	for _, c := range []string{"memory", "pids", "cpu"} {
		if contains(avail, c) {
			enable = append(enable, "+"+c)
		}
	}
	if len(enable) == 0 {
		return nil
	}
	if err := writeFile(filepath.Join(d, "cgroup.subtree_control"), strings.Join(enable, " ")); err != nil {
		return fmt.Errorf("delegate controllers in %s: %w", d, err)
	}
	return nil
}

// limitsV1 writes the limits through containerd/cgroups' v1 controllers,
// restricted to the hierarchies limits live in: a Load over the default
// hierarchy would require the host's dir in every mounted v1 hierarchy.
func limitsV1(dirs map[string]string, spec Spec) error {
	group, subsystems, err := v1LimitSubsystems(dirs, spec.CPU > 0)
	if err != nil {
		return err
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(group), cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
		return subsystems, nil
	}))
	if err != nil {
		return fmt.Errorf("load cgroup %s: %w", group, err)
	}
	res := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &spec.Memory},
		Pids:   &specs.LinuxPids{Limit: &spec.Pids},
	}
	// memory+swap exists only with swap accounting; without it the memory
	// limit alone is what the learner sees and what the OOM killer enforces.
	if _, err := os.Stat(filepath.Join(dirs["memory"], "memory.memsw.limit_in_bytes")); err == nil {
		res.Memory.Swap = &spec.Memory
	}
	if spec.CPU > 0 {
		quota, period := cpuQuota(spec.CPU), uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if err := cg.Update(res); err != nil {
		return fmt.Errorf("set limits of cgroup %s: %w", group, err)
	}
	return nil
}

// v1LimitSubsystems returns the host's cgroup path relative to the
// hierarchy roots and the controllers that carry its limits.
func v1LimitSubsystems(dirs map[string]string, cpu bool) (string, []cgroup1.Subsystem, error) {
	controllers := []cgroup1.Name{cgroup1.Memory, cgroup1.Pids}
	if cpu {
		controllers = append(controllers, cgroup1.Cpu)
	}
	var group string
	var subsystems []cgroup1.Subsystem
	for _, name := range controllers {
		dir := dirs[string(name)]
		i := strings.Index(dir, "/"+cgroupParent+"/")
		if i < 0 && name == cgroup1.Cpu {
			return "", nil, &SupportError{Msg: "the lab limits CPU but the cpu cgroup controller is not mounted", Hint: "mount the v1 cpu controller under /sys/fs/cgroup/cpu"}
		}
		if i < 0 {
			return "", nil, &SupportError{Msg: fmt.Sprintf("the %s cgroup controller is not mounted", name), Hint: "see labctl's CheckSupport"}
		}
		mount, rel := dir[:i], dir[i:]
		group = rel
		// containerd/cgroups finds a controller at <parent>/<name>, the
		// layout systemd mounts (cpu is a link to cpu,cpuacct). Make sure
		// that names this hierarchy before writing through it.
		parent := filepath.Dir(mount)
		if !sameDir(mount, filepath.Join(parent, string(name))) {
			return "", nil, &SupportError{Msg: fmt.Sprintf("the %s cgroup controller is mounted at %s, not reachable as %s", name, mount, filepath.Join(parent, string(name))),
				Hint: "mount v1 controllers under /sys/fs/cgroup/<controller> (a link for co-mounted ones), as systemd does"}
		}
		switch name {
		case cgroup1.Memory:
			subsystems = append(subsystems, cgroup1.NewMemory(parent))
		case cgroup1.Pids:
			subsystems = append(subsystems, cgroup1.NewPids(parent))
		case cgroup1.Cpu:
			subsystems = append(subsystems, cgroup1.NewCpu(parent))
		}
	}
	return group, subsystems, nil
}

func sameDir(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// limitsV2 writes the limits through containerd/cgroups' v2 manager.
func limitsV2(dir string, spec Spec) error {
	group := strings.TrimPrefix(dir, unifiedRoot)
	m, err := cgroup2.Load(group, cgroup2.WithMountpoint(unifiedRoot))
	if err != nil {
		return fmt.Errorf("load cgroup %s: %w", group, err)
	}
	res := &cgroup2.Resources{
		Memory: &cgroup2.Memory{Max: &spec.Memory},
		Pids:   &cgroup2.Pids{Max: spec.Pids},
	}
	// As on v1 with memsw: the limit is on memory plus swap, so a host never
	// escapes its limit by swapping. Absent without swap support.
	if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
		noSwap := int64(0)
		res.Memory.Swap = &noSwap
	}
	if spec.CPU > 0 {
		quota, period := cpuQuota(spec.CPU), uint64(cpuPeriod)
		res.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, &period)}
	}
	if err := m.Update(res); err != nil {
		return fmt.Errorf("set limits of cgroup %s: %w", group, err)
	}
	return nil
}

const cpuPeriod = 100000 // µs, the kernel's default CFS period

// cpuQuota converts cores to a CFS quota, at least the kernel's 1 ms minimum.
func cpuQuota(cores float64) int64 {
	q := int64(cores * cpuPeriod)
	if q < 1000 {
		q = 1000
	}
	return q
}

// writeFile writes a cgroup (or proc) file in one write, as the kernel
// expects: no truncation, no temp file.
func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// joinCgroups moves pid into every dir.
func joinCgroups(dirs map[string]string, pid int) error {
	for _, d := range uniqueDirs(dirs) {
		if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("join cgroup %s: %w", d, err)
		}
	}
	return nil
}

// cgroupPIDs lists the processes of one cgroup; a missing cgroup has none.
func cgroupPIDs(dir string) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// pollInterval is how often teardown re-reads a condition it waits for.
const pollInterval = 2 * time.Millisecond

// defaultTeardown bounds teardown when the caller's context has no deadline.
const defaultTeardown = 15 * time.Second

// killCgroups SIGKILLs every process in dirs until all are empty. On v2
// cgroup.kill does it atomically; on v1 a process may fork between the read
// and the kill, so it loops (the host's init dying first makes the kernel
// kill its whole pid namespace, which usually ends it in one round).
func killCgroups(ctx context.Context, dirs []string) error {
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	for _, d := range dirs {
		if err := writeFile(filepath.Join(d, "cgroup.kill"), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("kill cgroup %s: %w", d, err)
		}
	}
	for {
		left := 0
		for _, d := range dirs {
			pids, err := cgroupPIDs(d)
			if err != nil {
				return fmt.Errorf("list processes of %s: %w", d, err)
			}
			left += len(pids)
			for _, pid := range pids {
				if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("kill %d in %s: %w", pid, d, err)
				}
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes still in %s: %w", strings.Join(dirs, ", "), ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// removeCgroups removes the host's cgroup trees and then, best-effort, the
// instance and labctl parents once they are empty.
func removeCgroups(ctx context.Context, dirs []string) error {
	for _, d := range dirs {
		if err := RemoveCgroupTree(ctx, d); err != nil {
			return err
		}
		instanceDir := filepath.Dir(d)
		// Another host of the instance or another instance may still be
		// there (ENOTEMPTY/EBUSY): that is their owner's to remove.
		if unix.Rmdir(instanceDir) == nil {
			_ = unix.Rmdir(filepath.Dir(instanceDir))
		}
	}
	return nil
}

// RemoveCgroupTree kills every process in the cgroup tree at top and
// removes its directories, deepest first, then waits until the killed
// processes are reaped. The tree is re-read every round: while it is torn
// down a process may fork, a learner may have made child cgroups, and a
// container's systemd may still create a unit's cgroup (rmdir of a parent
// then fails with EBUSY until the newcomer is gone too).
func RemoveCgroupTree(ctx context.Context, top string) error {
	if !strings.Contains(top, "/"+cgroupParent+"/") {
		return fmt.Errorf("remove cgroup tree: %q is not a labctl cgroup", top)
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	var killed []proc
	for {
		dirs := cgroupTree(top)
		if len(dirs) == 0 {
			break
		}
		for _, d := range dirs {
			pids, _ := cgroupPIDs(d)
			for _, pid := range pids {
				killed = append(killed, proc{pid, procStart(pid)})
			}
		}
		if err := killCgroups(ctx, dirs); err != nil {
			return err
		}
		var busy error
		for _, d := range dirs {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				continue
			}
			// EBUSY: a child cgroup appeared since the tree was read,
			// or the kernel is still tearing the last task down.
			if !errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("remove cgroup %s: %w", d, err)
			}
			busy = fmt.Errorf("remove cgroup %s: %w", d, err)
			break
		}
		if busy == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", busy, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	return waitGone(ctx, killed)
}

// cgroupTree lists the directories of a cgroup tree, deepest first; a
// missing tree has none.
func cgroupTree(top string) []string {
	var dirs []string
	_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.SliceStable(dirs, func(i, j int) bool {
		return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/")
	})
	return dirs
}

// proc names one process across PID reuse.
type proc struct {
	pid   int
	start uint64 // clock ticks after boot, field 22 of /proc/PID/stat
}

// procStart is the start time of pid, 0 when it is gone.
func procStart(pid int) uint64 {
	n, _ := processStartTime(pid)
	return n
}

// orphanZombie reports whether pid is a zombie whose parent is the
// machine's PID 1.
func orphanZombie(pid int) bool {
	f, err := statFields(pid)
	return err == nil && len(f) > 1 && f[0] == "Z" && f[1] == "1"
}

// waitGone polls until none of procs exists any more, or is only a zombie
// left to the machine's PID 1. Such an orphan is the machine's init's to
// reap, on its own schedule (seen here: every 1.3-1.8 s); like Alive and
// the residue snapshot, teardown counts it as gone.
func waitGone(ctx context.Context, procs []proc) error {
	for _, p := range procs {
		for p.start != 0 && procStart(p.pid) == p.start && !orphanZombie(p.pid) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("process %d was killed but not reaped: %w", p.pid, ctx.Err())
			case <-time.After(pollInterval):
			}
		}
	}
	return nil
}

func withDefaultDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultTeardown)
}
