//go:build linux

package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
)

// netnsDir is where named network namespaces live (ip-netns(8)).
const netnsDir = "/run/netns"

// stateRoot is labctl's machine-side state, hidden inside every host.
const stateRoot = "/run/labctl"

// Ledger data of each resource kind Start records.
type (
	processRecord struct {
		// The process is found through its cgroups rather than its PID:
		// membership survives PID reuse, and everything the host started
		// (including entered commands outside its pid namespace) is there.
		Cgroups map[string]string `json:"cgroups"`
	}
	netnsRecord struct {
		Path string `json:"path"`
	}
	mountRecord struct {
		Target string `json:"target"`
	}
	dirRecord struct {
		Path    string `json:"path"`
		Staging string `json:"staging,omitempty"` // its name before the rename into place
	}
)

// startTimeout bounds Start when ctx has no deadline.
const startTimeout = 30 * time.Second

// Start starts a host. On error everything it created is released.
func Start(ctx context.Context, spec Spec, rec Recorder) (h *Host, err error) {
	if spec.Init == InitSystemd {
		return startSystemd(ctx, spec, rec)
	} // systemd_linux.go
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	layout, err := DetectLayout()
	if err != nil {
		return nil, err
	}
	dirs, hierarchies, err := planCgroups(layout, spec.Instance, spec.Name)
	if err != nil {
		return nil, err
	}
	// Refuse to adopt what exists: releasing it on failure would remove
	// resources that belong to someone else.
	for _, d := range uniqueDirs(dirs) {
		if _, err := os.Lstat(d); err == nil {
			return nil, fmt.Errorf("host %s: cgroup %s already exists (a stale instance? run labctl gc)", spec.Name, d)
		}
	}
	nsPath := filepath.Join(netnsDir, spec.NetNSName)
	if _, err := os.Lstat(nsPath); err == nil {
		return nil, fmt.Errorf("host %s: network namespace %s already exists (a stale instance? run labctl gc)", spec.Name, nsPath)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}

	// Every record is also kept here, so a failure releases in reverse.
	type created struct {
		kind, name string
		data       json.RawMessage
	}
	var done []created
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
		done = append(done, created{kind, name, raw})
		return nil
	}
	defer func() {
		if err == nil {
			return
		}
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultTeardown)
		defer cancel()
		for i := len(done) - 1; i >= 0; i-- {
			if rerr := Release(cleanup, done[i].kind, done[i].name, done[i].data); rerr != nil {
				err = fmt.Errorf("%w; and releasing %s %s: %w", err, done[i].kind, done[i].name, rerr)
			}
		}
	}()

	hostID := spec.Instance + "/" + spec.Name
	if err := record(KindCgroup, hostID, cgroupRecord{Layout: layout, Dirs: dirs}); err != nil {
		return nil, err
	}
	if err := createCgroups(layout, dirs, spec); err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	overlays, err := prepareOverlays(spec)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	// /run/netns exists before the init is cloned, so that the init can
	// hide it (a later mkdir would show up inside the host).
	netnsDone, err := ensureNetnsDir(record)
	if err != nil {
		return nil, err
	}
	defer func() {
		if netnsDone != nil {
			netnsDone()
		}
	}()
	if err := record(KindProcess, hostID, processRecord{Cgroups: dirs}); err != nil {
		return nil, err
	}
	params := initParams{
		Lab:         spec.Lab,
		Host:        spec.Name,
		Hostname:    spec.Hostname,
		Layout:      layout,
		Hierarchies: hierarchies,
		Overlays:    overlays,
		Hide:        []string{stateRoot, netnsDir},
	}
	if params.Hostname == "" {
		params.Hostname = spec.Name
	}
	pid, err := startInit(ctx, spec, layout, dirs, params)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	startTime, err := processStartTime(pid)
	if err != nil {
		return nil, fmt.Errorf("host %s: init %d: %w", spec.Name, pid, err)
	}
	if err := record(KindNetNS, spec.NetNSName, netnsRecord{Path: nsPath}); err != nil {
		return nil, err
	}
	if err := bindNetns(pid, nsPath); err != nil {
		return nil, fmt.Errorf("host %s: %w", spec.Name, err)
	}
	netnsDone()
	netnsDone = nil
	h = &Host{
		Name:          spec.Name,
		InitPID:       pid,
		InitStartTime: startTime,
		NetNS:         nsPath,
		Cgroups:       dirs,
		Layout:        layout,
	}
	for _, m := range spec.Mounts {
		if err := AddMount(ctx, h, spec.StateDir, m, record); err != nil {
			return nil, fmt.Errorf("host %s: %w", spec.Name, err)
		}
	}
	return h, nil
}

// startInit clones the host's init into its new namespaces and cgroups,
// and waits until it has set up the host or reported why it could not.
func startInit(ctx context.Context, spec Spec, layout Layout, dirs map[string]string, params initParams) (int, error) {
	cmd, sendParams, err := reexec.Command(helperInit, initComm, []string{spec.Lab + "/" + spec.Name}, params)
	if err != nil {
		return 0, err
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer goW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		goR.Close()
		return 0, err
	}
	defer statusR.Close()
	// The init keeps none of the caller's descriptors (exec closes all but
	// these); its output goes to a log in the state dir, for debugging.
	logFile, err := os.OpenFile(filepath.Join(spec.StateDir, "init.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		goR.Close()
		statusW.Close()
		return 0, fmt.Errorf("init log: %w", err)
	}
	defer logFile.Close()
	cmd.Stdin = nil // /dev/null
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = "/"
	cmd.ExtraFiles = append(cmd.ExtraFiles, goR, statusW) // fds 4, 5
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
		// Its own session: the learner's Ctrl-C in the terminal that ran
		// `labctl up` must not reach the host. No Pdeathsig: the host
		// outlives `labctl up`.
		Setsid: true,
	}
	if layout == CgroupV2 {
		cg, err := os.Open(dirs["unified"])
		if err != nil {
			return 0, fmt.Errorf("open cgroup: %w", err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	err = cmd.Start()
	goR.Close()
	statusW.Close()
	if err != nil {
		return 0, fmt.Errorf("start init: %w", err)
	}
	pid := cmd.Process.Pid
	// Reap it in this process if it dies while we run; after we exit the
	// machine's init does.
	go cmd.Wait() //nolint:errcheck // its exit is observed through the status pipe
	if err := sendParams(); err != nil {
		return pid, fmt.Errorf("send init parameters: %w", err)
	}
	if layout == CgroupV1 {
		if err := joinCgroups(dirs, pid); err != nil {
			return pid, err
		}
	}
	// The init is the biggest thing in a small memory cgroup only until the
	// lab's processes start; the OOM killer must pick those, never PID 1
	// (its death would end the host). It forks nothing that would inherit
	// this. Best effort: lowering the score needs CAP_SYS_RESOURCE, which
	// some machines (containers) do not grant; the init is small anyway.
	_ = writeFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), "-1000")
	if _, err := goW.Write([]byte{1}); err != nil {
		return pid, fmt.Errorf("release init: %w", err)
	}
	goW.Close()

	type result struct {
		line string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(statusR).ReadString('\n')
		got <- result{strings.TrimSpace(line), err}
	}()
	select {
	case <-ctx.Done():
		return pid, fmt.Errorf("waiting for the host's init: %w", ctx.Err())
	case r := <-got:
		switch {
		case r.line == "ok":
			return pid, nil
		case strings.HasPrefix(r.line, "error: "):
			return pid, fmt.Errorf("init: %s", strings.TrimPrefix(r.line, "error: "))
		case errors.Is(r.err, io.EOF):
			return pid, fmt.Errorf("init exited during setup (see %s)", filepath.Join(spec.StateDir, "init.log"))
		default:
			return pid, fmt.Errorf("init status %q: %v", r.line, r.err)
		}
	}
}

// bindNetns names the init's network namespace: an empty file in
// /run/netns with the namespace bind-mounted on it, like `ip netns add`.
func bindNetns(pid int, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	src := fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, path, err)
	}
	return nil
}

// processStartTime reads field 22 of /proc/PID/stat (clock ticks after boot).
func processStartTime(pid int) (uint64, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	const startTimeField = 22 - 3 // fields[0] is field 3 (state)
	if len(fields) <= startTimeField {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[startTimeField], 10, 64)
}

// statFields returns /proc/PID/stat from field 3 (state) on: comm (field
// 2) may contain spaces and parentheses, so it splits after the last ')'.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(string(data[i+1:])), nil
}

// Alive reports whether the host's init is still the process we started.
func Alive(h *Host) bool {
	if h == nil || h.InitPID <= 0 {
		return false
	}
	st, err := processStartTime(h.InitPID)
	if err != nil || st != h.InitStartTime {
		return false
	}
	// A killed init is a zombie until its parent reaps it: not alive.
	f, err := statFields(h.InitPID)
	return err == nil && len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// Stop kills the host and removes its cgroups and named netns. Idempotent.
func Stop(ctx context.Context, h *Host) error {
	if h != nil && h.Init == InitSystemd {
		return stopSystemd(ctx, h)
	} // systemd_linux.go
	if h == nil {
		return nil
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	if Alive(h) {
		// The kernel kills the rest of the pid namespace with its init.
		if err := unix.Kill(h.InitPID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill init of %s: %w", h.Name, err)
		}
	}
	var errs []error
	if h.NetNS != "" {
		errs = append(errs, releaseNetns(h.NetNS))
	}
	errs = append(errs, removeCgroups(ctx, uniqueDirs(h.Cgroups)))
	// A task leaves its cgroup a moment before it finishes exiting: the
	// host is gone once its init no longer runs.
	errs = append(errs, waitInitGone(ctx, h))
	return errors.Join(errs...)
}

func waitInitGone(ctx context.Context, h *Host) error {
	for Alive(h) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("init %d of %s still running: %w", h.InitPID, h.Name, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// Release removes one resource recorded earlier. Idempotent: a resource
// already gone is success.
func Release(ctx context.Context, kind, name string, data json.RawMessage) error {
	if kind == KindSystemd {
		return releaseSystemd(ctx, name, data)
	} // systemd_linux.go
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	switch kind {
	case KindProcess:
		var r processRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("release process %s: %w", name, err)
		}
		return killCgroups(ctx, uniqueDirs(r.Cgroups))
	case KindCgroup:
		var r cgroupRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("release cgroup %s: %w", name, err)
		}
		return removeCgroups(ctx, uniqueDirs(r.Dirs))
	case KindNetNS:
		var r netnsRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("release netns %s: %w", name, err)
		}
		return releaseNetns(r.Path)
	case KindMount:
		var r mountRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("release mount %s: %w", name, err)
		}
		return releaseNetnsMount(r.Target)
	case KindImage, KindLoop:
		return releaseDisk(kind, name, data)
	case KindDir:
		var r dirRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("release dir %s: %w", name, err)
		}
		return releaseNetnsDir(r.Path, r.Staging)
	}
	return fmt.Errorf("release %s: unknown resource kind %q", name, kind)
}

// releaseNetns unmounts a named netns and removes its file. The namespace
// itself goes when its last process and mount are gone.
func releaseNetns(path string) error {
	if !strings.HasPrefix(path, netnsDir+"/") {
		return fmt.Errorf("release netns: %q is not under %s", path, netnsDir)
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
