// Package fs breaks the filesystem hierarchy and the permission model
// inside a lab host: permissions a service running as a lab user trips
// over, a planted setuid binary, a shared directory without the sticky
// bit, a full filesystem (bytes or inodes) and a read-only remount.
//
// Everything a fault creates lives in the host's private view: its
// overlays of /etc, /var, /srv... (whose upper layers are in the
// instance's state dir), its own /tmp, or a lab-local filesystem mounted
// in its mount namespace only. The machine's own files never change.
package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/faults/internal/hostproc"
	"github.com/labctl/labctl/labs"
)

// The host helpers the fault packages share, under this package's names.
var (
	poll     = hostproc.Poll
	run      = hostproc.Run
	comm     = hostproc.Comm
	children = hostproc.Children
	nsPID    = hostproc.NSPID
)

// startService starts a helper inside the host and returns the
// machine-side PID of the service once it runs under its own name. The
// launcher exits once the service is a child of the host's init, which
// reaps it: nothing here waits on the service.
func startService(ctx context.Context, h faults.Host, spec faults.ServiceSpec) (int, error) {
	before := map[int]bool{}
	for _, c := range children(h.InitPID()) {
		before[c] = true
	}
	cmd, err := h.Service(ctx, spec)
	if err != nil {
		return 0, err
	}
	// No pipes: the service inherits the launcher's stdout and stderr
	// and outlives it, so a pipe would never reach EOF. It logs to a file.
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("start %s: %w", spec.Comm, err)
	}
	var pid int
	err = poll(ctx, spec.Comm+" to start", func() (bool, error) {
		for _, c := range children(h.InitPID()) {
			if !before[c] && comm(c) == spec.Comm {
				pid = c
				return true, nil
			}
		}
		return false, nil
	})
	return pid, err
}

// stopService kills a service started by Apply if it still runs under
// its name (a reused PID belongs to someone else).
func stopService(pid int, name string) {
	if pid > 0 && comm(pid) == name {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// mountEntry is one line of a host's /proc/PID/mountinfo.
type mountEntry struct {
	Point, FSType, Source, Options string
}

// mountOf returns the mount that holds path in the host's view.
func mountOf(h faults.Host, path string) (mountEntry, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", h.InitPID()))
	if err != nil {
		return mountEntry{}, fmt.Errorf("read the host's mounts: %w", err)
	}
	var best mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 2 {
			continue
		}
		point := unescapeMount(f[4])
		if (path == point || strings.HasPrefix(path, strings.TrimSuffix(point, "/")+"/")) && len(point) >= len(best.Point) {
			best = mountEntry{Point: point, FSType: g[0], Source: g[1], Options: f[5]}
		}
	}
	if best.Point == "" {
		return best, fmt.Errorf("no mount holds %s", path)
	}
	return best, nil
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// labLocalTops are the host directories below which a tmpfs or ext4 is
// the host's own: /dev and /run are shared with the machine.
var labLocalTops = []string{"/etc", "/home", "/opt", "/root", "/srv", "/tmp", "/usr", "/var"}

var errNotLabLocal = errors.New("not on a lab-local filesystem (declare one under the host's mounts, or use /tmp)")

// requireLabLocal checks that path is on a filesystem that exists only in
// the host (a declared tmpfs or ext4 mount, or the host's /tmp), not on an
// overlay whose upper layer is a directory of the machine's disk: what is
// planted there (a setuid file) must never appear in the machine's
// filesystem, not even in labctl's state dir.
func requireLabLocal(h faults.Host, path string) (mountEntry, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return mountEntry{}, fmt.Errorf("%s: want an absolute, clean path", path)
	}
	m, err := mountOf(h, path)
	if err != nil {
		return m, err
	}
	if m.FSType != "tmpfs" && m.FSType != "ext4" {
		return m, fmt.Errorf("%s (on %s, %s): %w", path, m.Point, m.FSType, errNotLabLocal)
	}
	for _, top := range labLocalTops {
		if m.Point == top || strings.HasPrefix(m.Point, top+"/") {
			return m, nil
		}
	}
	return m, fmt.Errorf("%s (on %s): %w", path, m.Point, errNotLabLocal)
}

// onDeclaredMount is the load-time half of requireLabLocal: from the lab
// file alone, path is at or below a filesystem the host declares, or
// below the host's own /tmp. Apply still checks the real mount table.
func onDeclaredMount(h *labs.Host, path string) bool {
	if h == nil || !validPath(path) {
		return false
	}
	if path == "/tmp" || strings.HasPrefix(path, "/tmp/") {
		return true
	}
	for _, m := range h.Mounts {
		if path == m.Path || strings.HasPrefix(path, m.Path+"/") {
			return true
		}
	}
	return false
}

// notDeclaredMsg says how to fix it: mount a filesystem at mountAt.
func notDeclaredMsg(h *labs.Host, path, mountAt string) string {
	return fmt.Sprintf("%s is not on a lab-local filesystem of host %s (so the machine would hold it): declare one under hosts.%s.mounts, e.g. {path: %s, type: tmpfs, size: 4Mi}, or use a path below /tmp", path, h.Name, h.Name, mountAt)
}

var (
	commRe    = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,15}$`)
	accountRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

func validPath(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p && p != "/"
}

// readInHost reads a file of the host's view from the machine side.
func readInHost(h faults.Host, path string) string {
	b, _ := os.ReadFile(h.RootPath(path))
	return string(b)
}
