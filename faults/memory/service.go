package memory

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
)

// supervised describes a worker run under the supervisor in a host.
type supervised struct {
	Name    string // the worker's name (comm), e.g. worker
	Config  string // its config file inside the host
	Content string // the config file's content
	Restart time.Duration
}

// logDir is where the supervisor and the worker log inside the host
// (/var is private to the host).
func (s supervised) logDir() string { return "/var/log/" + s.Name }

// supervisorLog is the supervisor's log file inside the host.
func (s supervised) supervisorLog() string { return s.logDir() + "/supervisor.log" }

// start writes the worker's config into the host and starts the
// supervisor as a service of the host. The supervisor outlives this
// process: it belongs to the host, whose teardown kills it.
func (s supervised) start(ctx context.Context, h faults.Host) error {
	path := h.RootPath(s.Config)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("config of %s: %w", s.Name, err)
	}
	if err := os.WriteFile(path, []byte(s.Content), 0o644); err != nil {
		return fmt.Errorf("config of %s: %w", s.Name, err)
	}
	// The cmd is a launcher: it returns once the supervisor runs inside
	// the host as a child of the host's init. Its stdio stays /dev/null:
	// a pipe to this process would break when labctl exits.
	cmd, err := h.Service(ctx, faults.ServiceSpec{
		Helper: helperSupervisor,
		Comm:   "supervisor",
		Args: []string{"--restart", s.Restart.String(), "--max-restart", (8 * s.Restart).String(),
			"--log-dir", s.logDir(), "--", s.Name, "--config", s.Config},
	})
	if err != nil {
		return fmt.Errorf("supervisor of %s: %w", s.Name, err)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("start the supervisor of %s: %w", s.Name, err)
	}
	return nil
}

// findProcess returns the machine-side PID of the first process of the
// cgroup at dir whose comm is comm, or 0.
func findProcess(dir, comm string) int {
	for _, pid := range cgroupPIDs(dir) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == comm {
			return pid
		}
	}
	return 0
}

// cgroupPIDs lists the machine-side PIDs of a cgroup's processes.
func cgroupPIDs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// pollUntil calls cond every interval until it reports done, returns an
// error, or the deadline passes (then the last state is in the error).
func pollUntil(ctx context.Context, timeout time.Duration, cond func() (done bool, state string, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		done, state, err := cond()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not observable within %s: %s", timeout, state)
		case <-tick.C:
		}
	}
}

// oomKill is one kill of the kernel's OOM killer, from the kernel log.
type oomKill struct {
	PID  int
	Comm string
}

// The kernel logs, for each memory cgroup OOM kill, a summary line naming
// the cgroup whose limit was hit and the victim (since Linux 4.19), then
// "Memory cgroup out of memory: Killed process PID (COMM) ...".
var oomKillLine = regexp.MustCompile(`oom-kill:.*,oom_memcg=([^,]*),task_memcg=[^,]*,task=([^,]*),pid=(\d+),`)

// kernelLog reads the kernel ring buffer (what dmesg prints).
func kernelLog() (string, error) {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		return "", fmt.Errorf("kernel log size: %w", err)
	}
	buf := make([]byte, n)
	m, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return "", fmt.Errorf("read the kernel log: %w", err)
	}
	return string(buf[:m]), nil
}

// oomKillsOf returns the OOM kills the kernel log records for the memory
// cgroup at dir (a machine-side path ending in the path the kernel prints).
func oomKillsOf(klog, dir string) []oomKill {
	var out []oomKill
	for _, line := range strings.Split(klog, "\n") {
		m := oomKillLine.FindStringSubmatch(line)
		if m == nil || m[1] == "/" || m[1] == "" || !strings.HasSuffix(dir, m[1]) {
			continue
		}
		pid, _ := strconv.Atoi(m[3])
		out = append(out, oomKill{PID: pid, Comm: m[2]})
	}
	return out
}

// service is a worker started directly as a service of the host (no
// supervisor): it runs until the host stops or someone kills it.
type service struct {
	Name    string
	Config  string
	Content string
}

// start writes the config and starts the service; it returns the
// service's machine-side PID once it runs under its name.
func (s service) start(ctx context.Context, h faults.Host) (int, error) {
	path := h.RootPath(s.Config)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, fmt.Errorf("config of %s: %w", s.Name, err)
	}
	if err := os.WriteFile(path, []byte(s.Content), 0o644); err != nil {
		return 0, fmt.Errorf("config of %s: %w", s.Name, err)
	}
	cmd, err := h.Service(ctx, faults.ServiceSpec{Helper: helperWorker, Comm: s.Name, Args: []string{"--config", s.Config}})
	if err != nil {
		return 0, fmt.Errorf("service %s: %w", s.Name, err)
	}
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("start %s: %w", s.Name, err)
	}
	var pid int
	err = pollUntil(ctx, 10*time.Second, func() (bool, string, error) {
		pid = findProcess(h.CgroupDir("memory"), s.Name)
		return pid > 0, "no process " + s.Name + " in the host", nil
	})
	return pid, err
}

// procStatus reads a field of /proc/PID/status in bytes (VmRSS, VmSize).
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// mib formats bytes as a whole number of MiB, as ps/top users read them.
func mib(b int64) string { return strconv.FormatInt((b+(1<<19))>>20, 10) }
