// Package process holds the "processes & signals" fault family: services
// that leak zombies, ignore SIGTERM, block on a pipe, deadlock their
// thread pool or exhaust the host's pids limit. Every service is labctl
// re-exec'd inside the host under the service's own name (see
// faults.Host.Service), so the learner's ps, strace and /proc show a
// believable program, and the kernel produces every symptom.
package process

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

// readyTimeout bounds how long Apply waits for a symptom to appear.
const readyTimeout = 15 * time.Second

// helpers of this package: they must run their blocking syscalls on the
// main thread, the one `strace -p PID` attaches to and /proc/PID/wchan
// shows, so init locks the main goroutine to it (as runner/sandbox does).
// Package variables are initialised before any init function runs, so
// the set is complete when init below consults it.
var mainThreadHelpers = map[string]bool{helperBlockedIO: true, helperLockWait: true}

func init() {
	if mainThreadHelpers[os.Getenv(reexec.EnvHelper)] {
		runtime.LockOSThread()
	}
}

// validateService checks a service name: it becomes comm (15 bytes).
func validateService(name string) error {
	if name == "" {
		return &labs.ParamError{Field: "service", Msg: "must not be empty"}
	}
	if len(name) > 15 {
		return &labs.ParamError{Field: "service", Msg: "at most 15 characters (the kernel's comm length)"}
	}
	if strings.ContainsAny(name, "/ \t\n") {
		return &labs.ParamError{Field: "service", Msg: "a command name: no slash or space"}
	}
	return nil
}

// ready is the line a helper writes on stdout once its fault is set up.
type ready struct {
	PID   int               `json:"pid"` // PID inside the host
	Extra map[string]string `json:"extra,omitempty"`
}

// started is a service running inside a host.
type started struct {
	HostPID    int // as the learner sees it inside the host
	MachinePID int // as the machine (and the probes) see it
	Extra      map[string]string
}

// startService starts a helper as a service inside the host and returns
// once the helper has reported that it is set up. The service is not
// waited for: it belongs to the host and dies with it.
func startService(ctx context.Context, host faults.Host, spec faults.ServiceSpec) (*started, error) {
	cmd, err := host.Service(ctx, spec)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd.Stdout = w
	// Errors of the launcher and of the helper before it is ready land in
	// an unlinked file, read only to explain a failure.
	errFile, err := os.CreateTemp("", "labctl-service-")
	if err != nil {
		w.Close()
		return nil, err
	}
	os.Remove(errFile.Name())
	defer errFile.Close()
	cmd.Stderr = errFile
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Comm, err)
	}
	w.Close()
	// cmd is a short-lived launcher that exits once the service runs,
	// re-parented to the host's init: wait for it so no zombie of it
	// stays in a long-lived caller (tests, labctl test).
	if err := cmd.Wait(); err != nil {
		stderr, _ := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", errFile.Fd()))
		return nil, fmt.Errorf("start %s: %w: %s", spec.Comm, err, strings.TrimSpace(string(stderr)))
	}

	lines := make(chan string, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil && line == "" {
			line = "error: " + err.Error()
		}
		lines <- line
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(readyTimeout):
		return nil, fmt.Errorf("service %s did not report ready within %s", spec.Comm, readyTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var rd ready
	if err := json.Unmarshal([]byte(line), &rd); err != nil || rd.PID <= 0 {
		stderr, _ := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", errFile.Fd()))
		return nil, fmt.Errorf("service %s failed to start: %s %s", spec.Comm, strings.TrimSpace(line), strings.TrimSpace(string(stderr)))
	}
	mpid, err := machinePID(host.InitPID(), rd.PID)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", spec.Comm, err)
	}
	return &started{HostPID: rd.PID, MachinePID: mpid, Extra: rd.Extra}, nil
}

// reportReady is the helper side of startService: one JSON line on
// stdout, then stdout and stderr go to /dev/null so the service never
// writes to a pipe whose reader (labctl up) is gone.
func reportReady(extra map[string]string) {
	data, _ := json.Marshal(ready{PID: os.Getpid(), Extra: extra})
	os.Stdout.Write(append(data, '\n'))
	if null, err := os.OpenFile("/dev/null", os.O_RDWR, 0); err == nil {
		unix.Dup2(int(null.Fd()), 1)
		unix.Dup2(int(null.Fd()), 2)
		null.Close()
	}
}

// helperFail is how a helper reports a setup error to startService.
func helperFail(err error) int {
	fmt.Fprintf(os.Stdout, "%v\n", err)
	return 1
}

// machinePID finds the machine-side PID of the process that has PID
// hostPID inside the pid namespace of the host whose init is initPID.
func machinePID(initPID, hostPID int) (int, error) {
	return machineIDIn("/proc", initPID, hostPID)
}

// machineTID is machinePID for a thread of a process.
func machineTID(initPID, machinePID, hostTID int) (int, error) {
	return machineIDIn(fmt.Sprintf("/proc/%d/task", machinePID), initPID, hostTID)
}

func machineIDIn(dir string, initPID, id int) (int, error) {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", initPID))
	if err != nil {
		return 0, fmt.Errorf("pid namespace of the host's init: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", n)); err != nil || ns != want {
			continue
		}
		ids, err := nsPIDs(filepath.Join(dir, e.Name(), "status"))
		if err == nil && len(ids) > 1 && ids[len(ids)-1] == id {
			return n, nil
		}
	}
	return 0, fmt.Errorf("no process with PID %d in the host", id)
}

// nsPIDs reads the NSpid line of a status file: the PID in every pid
// namespace from the reader's down to the process's own.
func nsPIDs(status string) ([]int, error) {
	v, err := statusField(status, "NSpid")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(v) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: bad NSpid %q", status, v)
		}
		out = append(out, n)
	}
	return out, nil
}

// statusField returns the value of one "Name:\tvalue" line of a
// /proc/PID/status file.
func statusField(path, name string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no %s line", path, name)
}

// waitFor polls cond until it holds, fails or the deadline passes: the
// readiness of a fault is a condition of the kernel's state, never a sleep.
func waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("%s: not observable after %s: %w", what, readyTimeout, last)
			}
			return fmt.Errorf("%s: not observable after %s", what, readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// procState is the one-letter state of a machine-side PID (ps's STAT).
func procState(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 1 {
		return "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return f[0], nil
}

// serviceState is what every kind keeps for Revert.
type serviceState struct {
	MachinePID int    `json:"machine_pid"`
	StartTime  uint64 `json:"start_time"` // guards against PID reuse
}

func newServiceState(pid int) serviceState {
	st, _ := startTime(pid)
	return serviceState{MachinePID: pid, StartTime: st}
}

func startTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// revertService kills the service if it still runs (the same process,
// not a reused PID). Already gone is success. Its children die with the
// host; a killed parent's zombies are reaped by the host's init.
func revertService(raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	var st serviceState
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("service state: %w", err)
	}
	if st.MachinePID <= 0 {
		return nil
	}
	if now, err := startTime(st.MachinePID); err != nil || now != st.StartTime {
		return nil
	}
	if err := unix.Kill(st.MachinePID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill service %d: %w", st.MachinePID, err)
	}
	return nil
}

func marshalState(v any) json.RawMessage {
	data, _ := json.Marshal(v)
	return data
}

// blockForever parks the calling goroutine without the Go runtime
// calling it a deadlock.
func blockForever() {
	for {
		time.Sleep(time.Hour)
	}
}
