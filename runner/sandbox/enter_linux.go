//go:build linux

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
)

// enterEnv carries the enter helper's parameters. They are the command's
// own argv and environment, nothing secret, and the helper runs outside the
// host's pid namespace, so no learner can read them from /proc; an
// environment variable avoids leaking a pipe into the caller.
const enterEnv = "LABCTL_SANDBOX_ENTER"

// enterParams tells sandbox-enter which host to enter and what to run.
type enterParams struct {
	InitPID       int               `json:"init_pid"`
	InitStartTime uint64            `json:"init_start_time"`
	Cgroups       map[string]string `json:"cgroups"`
	Env           []string          `json:"env"`
	Argv          []string          `json:"argv"`
	// Path is a machine-side executable, opened before entering, so it
	// need not be visible inside the host; "" looks Argv[0] up there.
	Path string `json:"path,omitempty"`
	// Service detaches the command: it becomes a child of the host's init.
	Service bool `json:"service,omitempty"`
	// ReportFD, when > 0, is the fd the service's machine-side PID is
	// written to; the fds from 3 up to it are forwarded to the command.
	ReportFD int `json:"report_fd,omitempty"`
}

// enterNamespaces in the order the helper joins them: the mount namespace
// last, because after it /proc/PID/ns of the init may no longer resolve.
var enterNamespaces = []struct {
	name string
	flag int
}{
	{"cgroup", unix.CLONE_NEWCGROUP},
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
	{"net", unix.CLONE_NEWNET},
	{"pid", unix.CLONE_NEWPID},
	{"mnt", unix.CLONE_NEWNS},
}

// Exit codes of the enter helper itself (as env(1) and nsenter use them).
const (
	exitEnterFailed = 125 // could not enter the host
	exitNotFound    = 127 // argv[0] not found inside the host
	exitCannotRun   = 126
)

// Command returns a command that runs argv inside all namespaces and
// cgroups of the host, with the host's dropped capabilities and a clean
// environment (PATH, HOME=/root, TERM from the caller, LANG) plus env, in
// "/". Its exit code is argv's (128+signal when signalled; 125 when the
// host could not be entered). Stdio passes through, so interactive shells
// on a terminal work; files in the returned cmd's ExtraFiles reach the
// command as fds 3.. in the same order.
func Command(ctx context.Context, h *Host, env []string, argv ...string) *exec.Cmd {
	return CommandWith(ctx, h, CommandSpec{Argv: argv, Env: env})
}

// CommandSpec describes a command to run inside a host.
type CommandSpec struct {
	// Path is the machine-side executable. It is opened before the host is
	// entered and executed by descriptor, so it may live where the host
	// cannot see it (labctl under /tmp, which is private in every host).
	// Empty: Argv[0] is looked up in the PATH inside the host.
	Path string
	// Argv is the command's argv; Argv[0] is what ps shows, whatever Path is.
	Argv []string
	// Env is added to the clean environment every command starts with.
	Env []string
	// ExtraFiles become the command's fds 3.. in order (also settable on
	// the returned cmd's ExtraFiles when ReportPID is nil).
	ExtraFiles []*os.File
	// Service detaches the command from its caller: the returned cmd is a
	// short-lived launcher that exits 0 as soon as the command has been
	// exec'd inside the host in a session of its own, re-parented to the
	// host's init (which reaps it), with the launcher's stdio (nil = /dev/null).
	Service bool
	// ReportPID, with Service, receives the command's machine-side PID as a
	// decimal line once it runs.
	ReportPID *os.File
}

// CommandWith returns a command that runs spec inside all namespaces and
// cgroups of the host (see Command for the environment and exit codes).
func CommandWith(ctx context.Context, h *Host, spec CommandSpec) *exec.Cmd {
	cmd := exec.CommandContext(ctx, reexec.Self())
	cmd.Args = []string{"labctl-enter"}
	if h != nil {
		cmd.Args = append(cmd.Args, h.Name)
	}
	p := enterParams{Env: spec.Env, Argv: spec.Argv, Path: spec.Path, Service: spec.Service}
	if h != nil {
		p.InitPID, p.InitStartTime, p.Cgroups = h.InitPID, h.InitStartTime, h.Cgroups
		// On cgroup v2, systemd-nspawn makes the host's cgroup an inner
		// node with controllers (payload/, supervisor/), which may hold no
		// process (EBUSY). Join the container's PID 1's own cgroup instead:
		// a leaf below it, so the host's limits still apply.
		if h.Init == InitSystemd && h.Layout == CgroupV2 {
			if dir, err := v2CgroupOf(h.InitPID); err == nil {
				p.Cgroups = map[string]string{"unified": dir}
			}
		}
	}
	cmd.ExtraFiles = append([]*os.File(nil), spec.ExtraFiles...)
	if spec.ReportPID != nil {
		p.ReportFD = 3 + len(cmd.ExtraFiles)
		cmd.ExtraFiles = append(cmd.ExtraFiles, spec.ReportPID)
	}
	raw, err := json.Marshal(p)
	switch {
	case h == nil:
		cmd.Err = errors.New("sandbox: Command on a nil host")
	case len(spec.Argv) == 0:
		cmd.Err = errors.New("sandbox: Command without argv")
	case spec.ReportPID != nil && !spec.Service:
		cmd.Err = errors.New("sandbox: ReportPID without Service")
	case err != nil:
		cmd.Err = fmt.Errorf("sandbox: encode command: %w", err)
	}
	cmd.Env = []string{
		reexec.EnvHelper + "=" + helperEnter,
		enterEnv + "=" + string(raw),
		"PATH=" + hostPath,
		"TERM=" + os.Getenv("TERM"),
	}
	cmd.Dir = "/"
	if spec.Service {
		// The launcher only starts the service; ctx bounds that. Killing a
		// launcher never reaches a service that already runs.
		cmd.WaitDelay = 5 * time.Second
		return cmd
	}
	// On cancel, let the helper pass SIGTERM on to the command; kill it
	// (and with it, through Pdeathsig, the command) if it lingers.
	cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// StartService starts spec as a service inside the host (see
// CommandSpec.Service) and returns its machine-side PID once it runs. The
// service's stdio is /dev/null.
func StartService(ctx context.Context, h *Host, spec CommandSpec) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	spec.Service, spec.ReportPID = true, w
	cmd := CommandWith(ctx, h, spec)
	// The launcher's errors, in a file: a pipe would stay open in the
	// service, which inherits the launcher's stderr, and Wait would hang.
	errFD, err := unix.MemfdCreate("launcher-stderr", unix.MFD_CLOEXEC)
	if err != nil {
		w.Close()
		return 0, fmt.Errorf("memfd: %w", err)
	}
	errFile := os.NewFile(uintptr(errFD), "launcher-stderr")
	defer errFile.Close()
	cmd.Stderr = errFile
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("start service %q: %w", spec.Argv, err)
	}
	out, rerr := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		msg, _ := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", errFD))
		return 0, fmt.Errorf("start service %q: %w: %s", spec.Argv, err, strings.TrimSpace(string(msg)))
	}
	if rerr != nil {
		return 0, fmt.Errorf("start service %q: read its pid: %w", spec.Argv, rerr)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("start service %q: launcher reported pid %q", spec.Argv, out)
	}
	return pid, nil
}

const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execFDMin is where executables opened by descriptor are moved: above the
// fds the Go runtime's fork shuffles (stdio, ExtraFiles, and its error
// pipe, which it moves just above the highest fd passed). Files passed to
// a child must stay below it.
const execFDMin = 100

// inheritedFiles takes over the fds this process was given at 3..: the
// first n, or when n < 0 every consecutive one that is not close-on-exec
// (fds the Go runtime opens itself always are). They are made close-on-
// exec so that only those passed on explicitly reach a child.
func inheritedFiles(n int) []*os.File {
	var files []*os.File
	for fd := 3; n < 0 || fd < 3+n; fd++ {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || (n < 0 && flags&unix.FD_CLOEXEC != 0) {
			break
		}
		unix.CloseOnExec(fd)
		files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("fd%d", fd)))
	}
	return files
}

// openExec opens an executable for execution by descriptor through
// /proc/self/fd/N, which the child resolves in its own (the host's) /proc.
func openExec(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, execFDMin)
	unix.Close(fd)
	if err != nil {
		return -1, fmt.Errorf("dup %s: %w", path, err)
	}
	return high, nil
}

// runEnter is the sandbox-enter helper. It runs on the locked main thread
// (see init), because namespaces are per-thread and the command is forked
// from this thread.
func runEnter() int {
	var p enterParams
	if err := json.Unmarshal([]byte(os.Getenv(enterEnv)), &p); err != nil {
		return enterFail(fmt.Errorf("parameters: %w", err))
	}
	files := inheritedFiles(-1)
	var report *os.File
	if p.ReportFD > 0 {
		n := p.ReportFD - 3
		if n < 0 || n >= len(files) {
			return enterFail(fmt.Errorf("report fd %d was not passed", p.ReportFD))
		}
		report, files = files[n], files[:n]
	}
	term := os.Getenv("TERM")
	os.Clearenv()
	if st, err := processStartTime(p.InitPID); err != nil || st != p.InitStartTime {
		return enterFail(fmt.Errorf("the host's init (pid %d) is gone", p.InitPID))
	}
	// Open every namespace before entering any: after setns into the
	// mount namespace, /proc is the host's and the init has another PID.
	fds := make([]int, len(enterNamespaces))
	for i, ns := range enterNamespaces {
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", p.InitPID, ns.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return enterFail(fmt.Errorf("open %s namespace: %w", ns.name, err))
		}
		fds[i] = fd
	}
	// Re-check after opening: the PID could have been reused in between.
	if st, err := processStartTime(p.InitPID); err != nil || st != p.InitStartTime {
		return enterFail(fmt.Errorf("the host's init (pid %d) is gone", p.InitPID))
	}
	// Opened now: after entering the mount namespace /proc is the host's,
	// where this helper (outside its pid namespace) has no /proc/self.
	oomAdj, err := os.OpenFile("/proc/self/oom_score_adj", os.O_WRONLY, 0)
	if err != nil {
		return enterFail(err)
	}
	exeFD := -1
	if p.Path != "" {
		if exeFD, err = openExec(p.Path); err != nil {
			return enterFail(err)
		}
	}
	// A service is started by a second stage inside the host (this binary
	// again), and the machine's /proc finds its PID afterwards.
	var selfFD, machineProc int = -1, -1
	if p.Service {
		// By its path: exec through a descriptor opened via the
		// /proc/self/exe magic link fails with EACCES here.
		if selfFD, err = openExec(reexec.Self()); err != nil {
			return enterFail(err)
		}
		if machineProc, err = unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return enterFail(fmt.Errorf("open /proc: %w", err))
		}
	}
	// Join the cgroups before anything of the command runs, so it is
	// limited and accounted from its first instruction.
	if err := joinCgroups(p.Cgroups, os.Getpid()); err != nil {
		return enterFail(err)
	}
	// setns into a mount namespace fails with EINVAL while this thread
	// shares its fs_struct with the runtime's other threads.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return enterFail(fmt.Errorf("unshare fs: %w", err))
	}
	for i, ns := range enterNamespaces {
		if err := unix.Setns(fds[i], ns.flag); err != nil {
			return enterFail(fmt.Errorf("enter %s namespace: %w", ns.name, err))
		}
		unix.Close(fds[i])
	}
	if err := unix.Chdir("/"); err != nil {
		return enterFail(fmt.Errorf("chdir /: %w", err))
	}
	if err := dropCaps(); err != nil {
		return enterFail(err)
	}

	env := []string{"PATH=" + hostPath, "HOME=/root", "LANG=C.UTF-8"}
	if term != "" {
		env = append(env, "TERM="+term)
	}
	env = append(env, p.Env...)
	if p.Service {
		return launchService(p, env, files, exeFD, selfFD, machineProc, report)
	}
	path := ""
	if exeFD >= 0 {
		path = fmt.Sprintf("/proc/self/fd/%d", exeFD)
	} else if path, err = lookPath(p.Argv[0], env); err != nil {
		fmt.Fprintf(os.Stderr, "labctl: %s: %v\n", p.Argv[0], err)
		return exitNotFound
	}
	cmd := exec.Command(path)
	cmd.Args = p.Argv
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	// No Pdeathsig: the command's parent is outside its pid namespace, so
	// getppid() returns 0 in it and Go's post-prctl check ("is my parent
	// already gone?") would kill it at once. Cancellation goes through
	// SIGTERM forwarding instead; a SIGKILLed helper leaves the command
	// running in the host, as nsenter does, until the host stops.

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT,
		unix.SIGWINCH, unix.SIGUSR1, unix.SIGUSR2, unix.SIGCONT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "labctl: %s: %v\n", p.Argv[0], err)
		return exitCannotRun
	}
	// The command inherited this helper's OOM score; now that it runs,
	// make sure the OOM killer of a small host picks lab processes, never
	// the helper that holds the learner's shell together.
	_, _ = oomAdj.WriteString("-1000")
	oomAdj.Close()
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exitErr.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "labctl: %s: %v\n", p.Argv[0], err)
		return exitCannotRun
	}
	return 0
}

// spawnEnv carries the second stage's parameters (see launchService).
const spawnEnv = "LABCTL_SANDBOX_SPAWN"

// spawnParams is what the second stage needs: the command and where its
// inherited fds are.
type spawnParams struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	Files    int      `json:"files"`     // forwarded fds 3..3+Files-1
	ExeFD    int      `json:"exe_fd"`    // the command's executable, or -1 for a PATH lookup
	ReportFD int      `json:"report_fd"` // where the second stage writes the command's PID in the host
}

// launchService starts the command as a child of the host's init. An
// orphan goes to the init of its *parent's* pid namespace, and this helper
// is outside the host's: so a second stage, forked inside the host, starts
// the command and exits, and the host's init adopts the command.
func launchService(p enterParams, env []string, files []*os.File, exeFD, selfFD, machineProc int, report *os.File) int {
	pidR, pidW, err := os.Pipe()
	if err != nil {
		return enterFail(err)
	}
	sp := spawnParams{Argv: p.Argv, Env: env, Files: len(files), ExeFD: -1, ReportFD: 3 + len(files) + 1}
	extra := append([]*os.File(nil), files...)
	if exeFD >= 0 {
		sp.ExeFD = 3 + len(files)
		// Passed from a low copy: the fork puts its error pipe just above
		// the highest fd it passes, which must not be selfFD.
		low, err := unix.FcntlInt(uintptr(exeFD), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return enterFail(err)
		}
		extra = append(extra, os.NewFile(uintptr(low), "exe"))
	} else {
		// Keep the report fd's number fixed: fill the exe slot.
		null, err := os.Open(os.DevNull)
		if err != nil {
			return enterFail(err)
		}
		extra = append(extra, null)
	}
	extra = append(extra, pidW)
	raw, err := json.Marshal(sp)
	if err != nil {
		return enterFail(err)
	}
	stage := exec.Command(fmt.Sprintf("/proc/self/fd/%d", selfFD))
	stage.Args = []string{"labctl-spawn"}
	stage.Env = []string{reexec.EnvHelper + "=" + helperSpawn, spawnEnv + "=" + string(raw)}
	stage.Dir = "/"
	stage.Stdin, stage.Stdout, stage.Stderr = os.Stdin, os.Stdout, os.Stderr
	stage.ExtraFiles = extra
	if err := stage.Start(); err != nil {
		return enterFail(fmt.Errorf("start the service launcher: %w", err))
	}
	pidW.Close()
	out, _ := io.ReadAll(pidR)
	err = stage.Wait()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode()
	}
	if err != nil {
		return enterFail(fmt.Errorf("service launcher: %w", err))
	}
	hostPID, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return enterFail(fmt.Errorf("service launcher reported pid %q", out))
	}
	if report == nil {
		return 0
	}
	pid, err := machinePID(machineProc, p.InitPID, hostPID)
	if err != nil {
		return enterFail(err)
	}
	if _, err := fmt.Fprintf(report, "%d\n", pid); err != nil {
		return enterFail(fmt.Errorf("report the service's pid: %w", err))
	}
	return 0
}

// machinePID finds the machine-side PID of the process that is hostPID in
// the pid namespace of the host whose init is initPID, through procfd (the
// machine's /proc, opened before entering the host).
func machinePID(procfd, initPID, hostPID int) (int, error) {
	want, err := readlinkAt(procfd, fmt.Sprintf("%d/ns/pid", initPID))
	if err != nil {
		return 0, fmt.Errorf("the host's pid namespace: %w", err)
	}
	dir := os.NewFile(uintptr(procfd), "/proc")
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("read /proc: %w", err)
	}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if ns, err := readlinkAt(procfd, name+"/ns/pid"); err != nil || ns != want {
			continue
		}
		data, err := readAt(procfd, name+"/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(data, "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 && f[len(f)-1] == strconv.Itoa(hostPID) {
					return pid, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("the service (pid %d in the host) is gone", hostPID)
}

func readlinkAt(dirfd int, path string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Readlinkat(dirfd, path, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func readAt(dirfd int, path string) (string, error) {
	fd, err := unix.Openat(dirfd, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	data, err := io.ReadAll(f)
	return string(data), err
}

// runSpawn is the second stage of a service launch, inside the host: start
// the command in a session of its own, report its PID, exit (the host's
// init adopts the command).
func runSpawn() int {
	var p spawnParams
	if err := json.Unmarshal([]byte(os.Getenv(spawnEnv)), &p); err != nil {
		return enterFail(fmt.Errorf("parameters: %w", err))
	}
	os.Clearenv()
	// Until it execs the command, ps inside shows this stage by name.
	_ = reexec.SetComm("labctl-spawn")
	inherited := inheritedFiles(p.ReportFD - 2)
	if len(inherited) != p.ReportFD-2 {
		return enterFail(fmt.Errorf("launcher: got %d fds, want %d", len(inherited), p.ReportFD-2))
	}
	files, report := inherited[:p.Files], inherited[len(inherited)-1]
	path := ""
	if p.ExeFD >= 0 {
		fd, err := unix.FcntlInt(uintptr(p.ExeFD), unix.F_DUPFD_CLOEXEC, execFDMin)
		if err != nil {
			return enterFail(err)
		}
		path = fmt.Sprintf("/proc/self/fd/%d", fd)
	} else {
		var err error
		if path, err = lookPath(p.Argv[0], p.Env); err != nil {
			fmt.Fprintf(os.Stderr, "labctl: %s: %v\n", p.Argv[0], err)
			return exitNotFound
		}
	}
	cmd := exec.Command(path)
	cmd.Args = p.Argv
	cmd.Env = p.Env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	// Its own session: the learner's terminal never reaches a service.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "labctl: %s: %v\n", p.Argv[0], err)
		return exitCannotRun
	}
	if _, err := fmt.Fprintf(report, "%d\n", cmd.Process.Pid); err != nil {
		return enterFail(err)
	}
	// Exit without waiting: the command is re-parented to the host's init.
	return 0
}

// lookPath finds name in the PATH of env, inside the host's filesystem view.
func lookPath(name string, env []string) (string, error) {
	for _, kv := range env {
		if len(kv) > 5 && kv[:5] == "PATH=" {
			os.Setenv("PATH", kv[5:])
		}
	}
	return exec.LookPath(name)
}

func enterFail(err error) int {
	fmt.Fprintf(os.Stderr, "labctl: enter host: %v\n", err)
	return exitEnterFailed
}

// v2CgroupOf returns the unified-hierarchy directory pid is in.
func v2CgroupOf(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(rel, "/") {
			return filepath.Join(unifiedRoot, rel), nil
		}
	}
	return "", fmt.Errorf("pid %d has no cgroup v2 path", pid)
}
