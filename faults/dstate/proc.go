package dstate

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

// readyTimeout bounds how long Apply waits for a symptom to appear.
const readyTimeout = 20 * time.Second

// poll calls cond until it reports true, fails, or the deadline passes;
// the symptom is observed, never assumed after a sleep.
func poll(ctx context.Context, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
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

// statusField returns a field of /proc/PID/status, e.g. "State" or "NSpid".
func statusField(pid int, field string) (string, error) {
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

// nsPID is the PID a process has in its innermost pid namespace: the one
// a learner inside the host sees.
func nsPID(pid int) (int, error) {
	v, err := statusField(pid, "NSpid")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return 0, fmt.Errorf("empty NSpid for %d", pid)
	}
	return strconv.Atoi(fields[len(fields)-1])
}

func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func children(pid int) []int {
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

// startService starts a helper inside the host and returns the
// machine-side PID of the service once it runs under its own name. The
// launcher Service returns exits once the service is exec'd as a child of
// the host's init, which reaps it: nothing here waits on the service.
func startService(ctx context.Context, h faults.Host, spec faults.ServiceSpec, stdout *os.File) (int, error) {
	before := map[int]bool{}
	for _, c := range children(h.InitPID()) {
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

// run runs argv inside the host and returns its combined output in the error.
func run(ctx context.Context, h faults.Host, argv ...string) error {
	cmd := h.Command(ctx, argv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mountInfo is one line of /proc/PID/mountinfo.
type mountInfo struct {
	Dev, Point, FSType, Source string
}

func mountsOf(pid int) ([]mountInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	var out []mountInfo
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		out = append(out, mountInfo{Dev: f[2], Point: unescape(f[4]), FSType: g[0], Source: g[1]})
	}
	return out, nil
}

func unescape(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// containingMount is the mount of the host's view that holds path.
func containingMount(pid int, path string) (mountInfo, error) {
	ms, err := mountsOf(pid)
	if err != nil {
		return mountInfo{}, err
	}
	var best mountInfo
	found := false
	for _, m := range ms {
		if m.Point == path || m.Point == "/" || strings.HasPrefix(path, strings.TrimSuffix(m.Point, "/")+"/") {
			if !found || len(m.Point) >= len(best.Point) {
				best, found = m, true
			}
		}
	}
	if !found {
		return mountInfo{}, fmt.Errorf("no mount holds %s", path)
	}
	return best, nil
}

// errNotPrivate explains how to give a host a private directory.
var errNotPrivate = errors.New("not in a private directory of the host: declare a file under it in the host's files (e.g. /srv/app/README) so the host gets a private copy, or use /tmp")

// requirePrivate refuses paths whose nearest existing directory is on a
// mount the host shares with the machine: creating a directory there would
// change the machine's own filesystem.
func requirePrivate(h faults.Host, path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("%s: want an absolute, clean path", path)
	}
	m, err := containingMount(h.InitPID(), filepath.Dir(path))
	if err != nil {
		return err
	}
	// The host's private views are overlays of machine directories and
	// its own tmpfs; "/" is the machine's root, shared.
	if m.Point == "/" || (m.FSType != "overlay" && m.FSType != "tmpfs") {
		return fmt.Errorf("%s (on %s, %s): %w", path, m.Point, m.FSType, errNotPrivate)
	}
	return nil
}

// openInHost opens (creating, appending) a file of the host's view from
// the machine side, e.g. a service's log.
func openInHost(h faults.Host, path string) (*os.File, error) {
	return os.OpenFile(h.RootPath(path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
}

func validComm(s string) bool {
	if len(s) == 0 || len(s) > 15 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
