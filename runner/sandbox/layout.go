//go:build linux

package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// DetectLayout reports the machine's cgroup layout.
func DetectLayout() (Layout, error) {
	switch cgroups.Mode() {
	case cgroups.Legacy, cgroups.Hybrid:
		return CgroupV1, nil
	case cgroups.Unified:
		return CgroupV2, nil
	}
	return 0, &SupportError{
		Msg:  "no cgroup filesystem is mounted at /sys/fs/cgroup",
		Hint: "mount cgroups (cgroup2 at /sys/fs/cgroup, or the v1 controllers under it) or run labs in the VM: labctl up --vm",
	}
}

// v1Wanted are the v1 controllers a host is placed in when they are mounted.
// memory and pids are required (the limits every host has); cpu carries
// the quota; cpuacct and freezer give the learner the usual evidence.
var v1Wanted = []string{"memory", "pids", "cpu", "cpuacct", "freezer"}

// v1Required must exist for a host to be started at all.
var v1Required = []string{"memory", "pids"}

// v1Controllers are the names the kernel knows as v1 controllers; a
// hierarchy's super options list its controllers among other flags.
var v1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "devices": true,
	"freezer": true, "net_cls": true, "net_prio": true, "blkio": true,
	"perf_event": true, "hugetlb": true, "pids": true, "rdma": true, "misc": true,
}

// hierarchy is one mounted v1 hierarchy that hosts are placed in.
type hierarchy struct {
	Mountpoint  string   `json:"mountpoint"`  // e.g. /sys/fs/cgroup/cpu,cpuacct
	Controllers []string `json:"controllers"` // e.g. [cpu cpuacct]
	Options     string   `json:"options"`     // mount data that reuses this hierarchy (controllers and flags)
}

// v1Hierarchies lists the mounted v1 hierarchies that carry one of the
// wanted controllers, keyed by the first mount seen of each.
func v1Hierarchies() ([]hierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	wanted := map[string]bool{}
	for _, c := range v1Wanted {
		wanted[c] = true
	}
	var out []hierarchy
	seen := map[string]bool{} // by controller set
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m, ok := parseMountinfo(sc.Text())
		if !ok || m.fstype != "cgroup" || m.root != "/" {
			continue
		}
		var ctrls, opts []string
		use := false
		for _, o := range strings.Split(m.superOpts, ",") {
			switch {
			case v1Controllers[o]:
				ctrls = append(ctrls, o)
				opts = append(opts, o)
				use = use || wanted[o]
			case o == "rw" || o == "ro" || strings.HasPrefix(o, "release_agent=") || strings.HasPrefix(o, "name="):
				// release_agent cannot be given from a cgroup namespace;
				// named hierarchies are not controllers.
			default:
				// Flags such as xattr or noprefix: repeating them keeps the
				// kernel from warning (in dmesg, which learners read) that
				// the new mount's options differ from the hierarchy's.
				opts = append(opts, o)
			}
		}
		key := strings.Join(ctrls, ",")
		if !use || seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, hierarchy{Mountpoint: m.mountpoint, Controllers: ctrls, Options: strings.Join(opts, ",")})
	}
	return out, sc.Err()
}

type mountEntry struct {
	root, mountpoint, fstype, superOpts string
}

// parseMountinfo splits one /proc/PID/mountinfo line (proc(5)).
func parseMountinfo(line string) (mountEntry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" {
			sep = i
			break
		}
	}
	if sep < 5 || len(fields) < sep+4 {
		return mountEntry{}, false
	}
	return mountEntry{
		root:       unescapeMount(fields[3]),
		mountpoint: unescapeMount(fields[4]),
		fstype:     fields[sep+1],
		superOpts:  fields[sep+3],
	}, true
}

// unescapeMount undoes the octal escapes (\040 for space...) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for j := 1; j <= 3; j++ {
				c := s[i+j]
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMountpoint reports whether path is the mountpoint of some mount in
// this process's mount namespace.
func isMountpoint(path string) (bool, error) {
	mounts, err := mountpoints()
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m == path {
			return true, nil
		}
	}
	return false, nil
}

// mountpoints lists the mountpoints of this process's mount namespace.
func mountpoints() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if m, ok := parseMountinfo(line); ok {
			out = append(out, m.mountpoint)
		}
	}
	return out, nil
}

const unifiedRoot = "/sys/fs/cgroup"

// CheckSupport returns a *SupportError when this process cannot run hosts.
func CheckSupport() error {
	const vmHint = "or run the lab in the Vagrant VM: labctl up --vm LAB"
	if os.Geteuid() != 0 {
		return &SupportError{Msg: "labctl must run as root to create lab hosts", Hint: "run it with sudo, " + vmHint}
	}
	for _, ns := range []string{"pid", "mnt", "net", "uts", "ipc", "cgroup"} {
		if _, err := os.Stat(filepath.Join("/proc/self/ns", ns)); err != nil {
			return &SupportError{
				Msg:  fmt.Sprintf("the kernel has no %s namespaces (/proc/self/ns/%s: %v)", ns, ns, err),
				Hint: "use a kernel with namespaces enabled, " + vmHint,
			}
		}
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return &SupportError{Msg: "cannot read /proc/filesystems: " + err.Error(), Hint: "mount /proc, " + vmHint}
	}
	if !strings.Contains(string(fs), "\toverlay\n") {
		return &SupportError{Msg: "the kernel has no overlay filesystem (hosts get a private /etc through it)", Hint: "modprobe overlay, " + vmHint}
	}
	layout, err := DetectLayout()
	if err != nil {
		return err
	}
	switch layout {
	case CgroupV1:
		hs, err := v1Hierarchies()
		if err != nil {
			return &SupportError{Msg: err.Error(), Hint: vmHint}
		}
		for _, want := range v1Required {
			if v1Dir(hs, want) == "" {
				return &SupportError{
					Msg:  fmt.Sprintf("the %s cgroup controller is not mounted (cgroup v1 layout)", want),
					Hint: fmt.Sprintf("mount it: mkdir -p /sys/fs/cgroup/%s && mount -t cgroup -o %s cgroup /sys/fs/cgroup/%s, %s", want, want, want, vmHint),
				}
			}
		}
	case CgroupV2:
		data, err := os.ReadFile(filepath.Join(unifiedRoot, "cgroup.subtree_control"))
		if err != nil {
			return &SupportError{Msg: "cannot read the cgroup2 root: " + err.Error(), Hint: vmHint}
		}
		have := strings.Fields(string(data))
		for _, want := range v1Required {
			if !contains(have, want) {
				return &SupportError{
					Msg:  fmt.Sprintf("the %s controller is not enabled at the cgroup2 root", want),
					Hint: fmt.Sprintf("echo +%s > /sys/fs/cgroup/cgroup.subtree_control, %s", want, vmHint),
				}
			}
		}
	}
	return nil
}

func v1Dir(hs []hierarchy, controller string) string {
	for _, h := range hs {
		if contains(h.Controllers, controller) {
			return h.Mountpoint
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ignoreGone turns "already gone" errors into success, for idempotent
// release: no such file, no such process, not mounted.
func ignoreGone(err error) error {
	if err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}
