// Package hostproc holds what fault drivers share for looking at a host's
// processes and mounts from the machine side: polling for a symptom, PIDs
// as the host sees them, starting services, finding a path's mount.
package hostproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"

	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/faults"
)

// ReadyTimeout bounds how long Apply waits for a symptom to appear.
const ReadyTimeout = 30 * time.Second

// Poll calls cond until it reports true, fails, or the deadline passes;
// the symptom is observed, never assumed after a sleep.
func Poll(ctx context.Context, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StatusField returns a field of /proc/PID/status, e.g. "State" or "NSpid".
func StatusField(pid int, field string) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == field {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// NSPID is the PID a process has in its innermost pid namespace: the one
// a learner inside the host sees.
func NSPID(pid int) (int, error) {
	v, err := StatusField(pid, "NSpid")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return 0, fmt.Errorf("empty NSpid for %d", pid)
	}
	return strconv.Atoi(fields[len(fields)-1])
}

func Comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func Children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// StartService starts a helper inside the host and returns the
// machine-side PID of the service once it runs under its own name. The
// launcher Service returns exits once the service is exec'd as a child of
// the host's init, which reaps it: nothing here waits on the service.
func StartService(ctx context.Context, h faults.Host, spec faults.ServiceSpec, stdout *os.File) (int, error) {
	before := map[int]bool{}
	for _, c := range Children(h.InitPID()) {
		before[c] = true
	}
	cmd, err := h.Service(ctx, spec)
	if err != nil {
		return 0, err
	}
	cmd.Stdout, cmd.Stderr = stdout, stdout
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("start %s: %w", spec.Comm, err)
	}
	var pid int
	err = Poll(ctx, spec.Comm+" to start", func() (bool, error) {
		for _, c := range Children(h.InitPID()) {
			if !before[c] && Comm(c) == spec.Comm {
				pid = c
				return true, nil
			}
		}
		return false, nil
	})
	return pid, err
}

// Run runs argv inside the host and returns its combined output in the error.
func Run(ctx context.Context, h faults.Host, argv ...string) error {
	cmd := h.Command(ctx, argv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// MountInfo is one line of /proc/PID/mountinfo.
type MountInfo struct {
	Dev, Point, FSType, Source string
}

func MountsOf(pid int) ([]MountInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	var out []MountInfo
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		out = append(out, MountInfo{Dev: f[2], Point: unescape(f[4]), FSType: g[0], Source: g[1]})
	}
	return out, nil
}

func unescape(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// ContainingMount is the mount of the host's view that holds path.
func ContainingMount(pid int, path string) (MountInfo, error) {
	ms, err := MountsOf(pid)
	if err != nil {
		return MountInfo{}, err
	}
	var best MountInfo
	found := false
	for _, m := range ms {
		if m.Point == path || m.Point == "/" || strings.HasPrefix(path, strings.TrimSuffix(m.Point, "/")+"/") {
			if !found || len(m.Point) >= len(best.Point) {
				best, found = m, true
			}
		}
	}
	if !found {
		return MountInfo{}, fmt.Errorf("no mount holds %s", path)
	}
	return best, nil
}

// ErrNotPrivate explains how to give a host a private directory.
var ErrNotPrivate = errors.New("not in a private directory of the host: declare a file under it in the host's files (e.g. /srv/app/README) so the host gets a private copy, or use /tmp")

// RequirePrivate refuses paths whose nearest existing directory is on a
// mount the host shares with the machine: creating a directory there would
// change the machine's own filesystem.
func RequirePrivate(h faults.Host, path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("%s: want an absolute, clean path", path)
	}
	m, err := ContainingMount(h.InitPID(), filepath.Dir(path))
	if err != nil {
		return err
	}
	// The host's private views are overlays of machine directories and
	// its own tmpfs; "/" is the machine's root, shared.
	if m.Point == "/" || (m.FSType != "overlay" && m.FSType != "tmpfs") {
		return fmt.Errorf("%s (on %s, %s): %w", path, m.Point, m.FSType, ErrNotPrivate)
	}
	return nil
}

// OpenInHost opens (creating, appending) a file of the host's view from
// the machine side, e.g. a service's log.
func OpenInHost(h faults.Host, path string) (*os.File, error) {
	return os.OpenFile(h.RootPath(path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
}
