package dstate

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

// The ioctls of fsfreeze(8) (linux/fs.h: _IOWR('X', 119/120, int)).
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// FreezeParams are the `with:` of process.dstate in mode freeze.
type FreezeParams struct {
	Mode    string    `yaml:"mode,omitempty" json:"mode,omitempty" doc:"freeze (a frozen ext4 filesystem) or fuse (a FUSE filesystem whose reads never answer); default freeze"`
	Mount   string    `yaml:"mount,omitempty" json:"mount,omitempty" doc:"mount point inside the host (default /srv/data); its parent must be private to the host"`
	Size    labs.Size `yaml:"size,omitempty" json:"size,omitempty" doc:"size of the ext4 image (freeze) (default 16Mi)"`
	Service string    `yaml:"service,omitempty" json:"service,omitempty" doc:"the process that ends up stuck, as ps shows it (default backup for freeze, indexer for fuse)"`
	Server  string    `yaml:"server,omitempty" json:"server,omitempty" doc:"fuse: the FUSE server's name as ps shows it (default archivefs)"`
	File    string    `yaml:"file,omitempty" json:"file,omitempty" doc:"the file the stuck process writes (freeze) or reads (fuse), in the mount (default data.bin / report.csv)"`
}

// Validate checks the params before anything is created.
func (p *FreezeParams) Validate() error {
	switch {
	case p.Mode != "freeze" && p.Mode != "fuse":
		return &labs.ParamError{Field: "mode", Msg: fmt.Sprintf("%q: want freeze or fuse", p.Mode)}
	case !filepath.IsAbs(p.Mount) || filepath.Clean(p.Mount) != p.Mount || p.Mount == "/":
		return &labs.ParamError{Field: "mount", Msg: "want an absolute, clean path other than /"}
	case p.Size < 8<<20 || p.Size > 256<<20:
		return &labs.ParamError{Field: "size", Msg: "must be between 8Mi and 256Mi"}
	case p.Service != "" && !validComm(p.Service):
		return &labs.ParamError{Field: "service", Msg: "want 1-15 characters: letters, digits, - and _"}
	case p.Server != "" && !validComm(p.Server):
		return &labs.ParamError{Field: "server", Msg: "want 1-15 characters: letters, digits, - and _"}
	case p.File != "" && (strings.Contains(p.File, "/") || p.File == "." || p.File == ".."):
		return &labs.ParamError{Field: "file", Msg: "want a plain file name"}
	}
	return nil
}

// hostRef finds a host's mount namespace again after a crash: the init's
// PID and start time, and the namespace's inode, which any process still
// in it (a writer stuck in D outlives the init) leads back to.
type hostRef struct {
	InitPID   int    `json:"init_pid"`
	InitStart uint64 `json:"init_start"`
	MntNS     uint64 `json:"mnt_ns"`
	Mount     string `json:"mount"`
}

func newHostRef(h faults.Host, mount string) (hostRef, error) {
	r := hostRef{InitPID: h.InitPID(), Mount: mount}
	var err error
	if r.InitStart, err = startTime(r.InitPID); err != nil {
		return r, err
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", r.InitPID), &st); err != nil {
		return r, fmt.Errorf("host mount namespace: %w", err)
	}
	r.MntNS = st.Ino
	return r, nil
}

// pids returns the machine-side PIDs of the processes still in the
// recorded mount namespace, the init first when it is still the same.
func (r hostRef) pids() []int {
	var out []int
	if st, err := startTime(r.InitPID); err == nil && st == r.InitStart {
		out = append(out, r.InitPID)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == r.InitPID {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &st) == nil && st.Ino == r.MntNS {
			out = append(out, pid)
		}
	}
	return out
}

func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

const resFreeze = "dstate.freeze"

// releaseFreeze thaws the recorded filesystem: through the mount point,
// and through every descriptor of the namespace's processes on an ext4
// loop filesystem, in case the learner lazily unmounted it while frozen
// (then only the stuck writer still reaches it). Not frozen, or gone, is
// success: it runs at every teardown and after crashes.
func releaseFreeze(_ context.Context, _ string, data json.RawMessage) error {
	var r hostRef
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("freeze record: %w", err)
	}
	var errs []error
	for _, pid := range r.pids() {
		paths := []string{fmt.Sprintf("/proc/%d/root%s", pid, r.Mount)}
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			for _, fd := range fds {
				paths = append(paths, fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			}
		}
		for _, p := range paths {
			if err := thaw(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// thaw thaws the ext4 filesystem path is on, if it is one and frozen.
func thaw(path string) error {
	var sfs unix.Statfs_t
	if unix.Statfs(path, &sfs) != nil || sfs.Type != unix.EXT4_SUPER_MAGIC {
		return nil // gone, or not the filesystem this kind freezes
	}
	// O_PATH is not enough for an ioctl; reading never blocks on a
	// frozen filesystem.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil // a socket or a vanished file: not a way in
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || unix.Major(st.Dev) != 7 {
		return nil // only loop devices: never the machine's own disks
	}
	err = unix.IoctlSetInt(fd, ioctlFITHAW, 0)
	if err == nil || errors.Is(err, unix.EINVAL) { // EINVAL: not frozen
		return nil
	}
	return fmt.Errorf("thaw %s: %w", path, err)
}

type freezeState struct {
	Ref     hostRef `json:"ref"`
	PID     int     `json:"pid"`
	Service string  `json:"service"`
}

// applyFreeze loop-mounts a fresh ext4 image at the mount point, starts a
// writer on it and freezes it: the writer's next write sleeps in D, where
// SIGKILL stays pending until the filesystem is thawed.
func applyFreeze(ctx context.Context, env faults.Env, f *labs.Fault, p *FreezeParams) (*faults.Applied, error) {
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	if err := requirePrivate(h, p.Mount); err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	ref, err := newHostRef(h, p.Mount)
	if err != nil {
		return nil, err
	}
	// Recorded before anything can be frozen: teardown and gc thaw first.
	if err := env.Record(resFreeze, f.ID, ref); err != nil {
		return nil, err
	}
	// The image lives in the host's private /tmp and the loop device is
	// set up by mount(8) with autoclear: when the host's mount namespace
	// goes, so do the mount, the loop device and the image.
	img := "/tmp/.labctl-" + env.InstanceID() + "-" + f.ID + ".img"
	steps := [][]string{
		{"mkdir", "-p", p.Mount},
		{"truncate", "-s", strconv.FormatInt(int64(p.Size), 10), img},
		{"mkfs.ext4", "-q", "-F", "-L", "data", img},
		{"mount", "-o", "loop", img, p.Mount},
	}
	for _, argv := range steps {
		if err := run(ctx, h, argv...); err != nil {
			return nil, err
		}
	}
	file := filepath.Join(p.Mount, p.File)
	pid, err := startService(ctx, h, faults.ServiceSpec{Helper: writerHelper, Comm: p.Service, Args: []string{"--target", file}, Params: p}, nil)
	if err != nil {
		return nil, err
	}
	state, _ := json.Marshal(freezeState{Ref: ref, PID: pid, Service: p.Service})
	applied := &faults.Applied{State: state}
	// Freeze only once the writer is writing, so it is caught mid-stream.
	err = poll(ctx, "the writer's first write", func() (bool, error) {
		st, err := os.Stat(h.RootPath(file))
		return err == nil && st.Size() > 0, nil
	})
	if err != nil {
		return applied, err
	}
	if err := freeze(h.RootPath(p.Mount)); err != nil {
		return applied, err
	}
	if err := waitState(ctx, pid, "D"); err != nil {
		return applied, err
	}
	return applied, withFacts(applied, h, pid, p)
}

func freeze(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, ioctlFIFREEZE, 0); err != nil {
		return fmt.Errorf("freeze %s: %w", path, err)
	}
	return nil
}

// waitState polls /proc/PID/status until the process is in state.
func waitState(ctx context.Context, pid int, state string) error {
	return poll(ctx, fmt.Sprintf("process %d to enter state %s", pid, state), func() (bool, error) {
		v, err := statusField(pid, "State")
		if err != nil {
			return false, err
		}
		return strings.HasPrefix(v, state), nil
	})
}

func withFacts(applied *faults.Applied, h faults.Host, pid int, p *FreezeParams) error {
	ns, err := nsPID(pid)
	if err != nil {
		return err
	}
	applied.Facts = map[string]string{
		"pid": strconv.Itoa(pid), "ns_pid": strconv.Itoa(ns), "service": p.Service,
		"mount": p.Mount, "file": filepath.Join(p.Mount, p.File), "mode": p.Mode,
	}
	if m, err := containingMount(h.InitPID(), p.Mount); err == nil {
		applied.Facts["device"] = m.Source
	}
	return nil
}

// revertFreeze thaws; the writer then finishes its write (or dies of a
// pending SIGKILL) and the host's teardown takes the rest.
func revertFreeze(state json.RawMessage) error {
	var s freezeState
	if len(state) == 0 || json.Unmarshal(state, &s) != nil || s.Ref.InitPID == 0 {
		return nil
	}
	raw, _ := json.Marshal(s.Ref)
	return releaseFreeze(context.Background(), "", raw)
}

const writerHelper = "dstate.writer"

// runWriter appends a block to its target twice a second, as a backup
// or journal process would; on a frozen filesystem the write blocks in D.
func runWriter() int {
	var p FreezeParams
	_ = reexec.Params(&p)
	name := p.Service
	if name == "" {
		name = "backup"
	}
	_ = reexec.SetComm(name)
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	target := fs.String("target", "/srv/data/data.bin", "")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	f, err := os.OpenFile(*target, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		}
		// Keep the file small: a long lab must not fill the image.
		if st, err := f.Stat(); err == nil && st.Size() > 4<<20 {
			_ = f.Truncate(0)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
