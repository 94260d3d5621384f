package dstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

const (
	resFuse      = "dstate.fuse"
	fuseHelper   = "dstate.fuse-server"
	readerHelper = "dstate.reader"
)

type fuseState struct {
	Mode    string  `json:"mode"` // "fuse", so Revert knows
	Ref     hostRef `json:"ref"`
	PID     int     `json:"pid"`
	Service string  `json:"service"`
}

// applyFuse starts a FUSE server inside the host (mounted directly, in
// the host's mount namespace only) whose reads never answer, then a
// reader that sleeps in D waiting for its page.
func applyFuse(ctx context.Context, env faults.Env, f *labs.Fault, p *FreezeParams) (*faults.Applied, error) {
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
	// Recorded before the connection exists: teardown and gc abort it.
	if err := env.Record(resFuse, f.ID, ref); err != nil {
		return nil, err
	}
	if err := run(ctx, h, "mkdir", "-p", p.Mount); err != nil {
		return nil, err
	}
	server, err := startService(ctx, h, faults.ServiceSpec{Helper: fuseHelper, Comm: p.Server, Args: []string{p.Mount}, Params: p}, nil)
	if err != nil {
		return nil, err
	}
	err = poll(ctx, "the FUSE filesystem to be mounted", func() (bool, error) {
		m, err := fuseMount(h.InitPID(), p.Mount)
		return m != nil, err
	})
	if err != nil {
		return nil, err
	}
	file := filepath.Join(p.Mount, p.File)
	pid, err := startService(ctx, h, faults.ServiceSpec{Helper: readerHelper, Comm: p.Service, Args: []string{"--scan", file}, Params: p}, nil)
	if err != nil {
		return nil, err
	}
	state, _ := json.Marshal(fuseState{Mode: "fuse", Ref: ref, PID: pid, Service: p.Service})
	applied := &faults.Applied{State: state}
	// The read first waits interruptibly (S). Any signal, here SIGURG that
	// the Go runtime of the reader shrugs off, makes the kernel forward an
	// interrupt the server never answers and wait on in D, as a real
	// reader does after its first ^C. The open waits in the same function
	// briefly, so nudge again until the state is D.
	err = poll(ctx, "the reader to wait for the FUSE server in D", func() (bool, error) {
		st, err := statusField(pid, "State")
		if err != nil || strings.HasPrefix(st, "D") {
			return err == nil, err
		}
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid)); string(b) == "request_wait_answer" {
			if err := unix.Tgkill(pid, pid, unix.SIGURG); err != nil {
				return false, fmt.Errorf("nudge the reader: %w", err)
			}
		}
		return false, nil
	})
	if err != nil {
		return applied, err
	}
	if err := withFacts(applied, h, pid, p); err != nil {
		return applied, err
	}
	ns, err := nsPID(server)
	if err != nil {
		return applied, err
	}
	applied.Facts["server"] = p.Server
	applied.Facts["server_ns_pid"] = fmt.Sprint(ns)
	return applied, nil
}

// fuseMount returns the FUSE mount at point in pid's mount namespace.
func fuseMount(pid int, point string) (*mountInfo, error) {
	ms, err := mountsOf(pid)
	if err != nil {
		return nil, err
	}
	for i := len(ms) - 1; i >= 0; i-- { // the top of a stack of mounts
		if ms[i].Point == point && strings.HasPrefix(ms[i].FSType, "fuse") {
			return &ms[i], nil
		}
	}
	return nil, nil
}

func revertFuse(ctx context.Context, state json.RawMessage) error {
	var s fuseState
	if json.Unmarshal(state, &s) != nil || s.Ref.InitPID == 0 {
		return nil
	}
	raw, _ := json.Marshal(s.Ref)
	return releaseFuse(ctx, "", raw)
}

// releaseFuse aborts the recorded FUSE connection through fusectl, which
// wakes every reader, then lazily unmounts it in the host's namespace.
// Gone is success; the connection is looked up live in the recorded
// namespace, so a reused connection number is never aborted by mistake.
func releaseFuse(_ context.Context, _ string, data json.RawMessage) error {
	var r hostRef
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("fuse record: %w", err)
	}
	for _, pid := range r.pids() {
		m, err := fuseMount(pid, r.Mount)
		if err != nil || m == nil {
			continue
		}
		_, minor, ok := strings.Cut(m.Dev, ":")
		if !ok {
			return fmt.Errorf("fuse mount %s: odd device %q", r.Mount, m.Dev)
		}
		return onLockedThread(func() error { return abortAndUnmount(pid, minor, r.Mount) })
	}
	return nil // no process left in the namespace: the connection is gone
}

// onLockedThread runs fn on a thread of its own that is thrown away
// afterwards, because fn changes its mount namespace. Never the main
// thread: /proc/self shows its namespaces for the whole process, and the
// runtime parks it rather than discarding it, so a namespace change there
// would stick to the process.
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// Holding the main thread here keeps the nested goroutine off it.
			errc <- onLockedThread(fn)
			runtime.UnlockOSThread()
			return
		}
		// Never unlocked: the runtime discards the thread with the goroutine.
		errc <- fn()
	}()
	return <-errc
}

func abortAndUnmount(pid int, minor, point string) error {
	hostNS, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // the namespace went meanwhile
	}
	defer unix.Close(hostNS)
	// fusectl is not mounted on the machine: mount it in a private
	// namespace of this thread only.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("private mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	const ctl = "/sys/fs/fuse/connections"
	if err := unix.Mount("none", ctl, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount fusectl: %w", err)
	}
	err = os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("abort fuse connection %s: %w", minor, err)
	}
	if err := unix.Setns(hostNS, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the host's mount namespace: %w", err)
	}
	if err := unix.Unmount(point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", point, err)
	}
	return nil
}

// archiveRoot is the FUSE filesystem: one directory with a file whose
// metadata answers at once and whose content never comes.
type archiveRoot struct {
	fs.Inode
	file string
}

var _ = (fs.NodeOnAdder)((*archiveRoot)(nil))

func (r *archiveRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &stuckFile{}, fs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild(r.file, ch, false)
}

type stuckFile struct{ fs.Inode }

var (
	_ = (fs.NodeGetattrer)((*stuckFile)(nil))
	_ = (fs.NodeOpener)((*stuckFile)(nil))
	_ = (fs.NodeReader)((*stuckFile)(nil))
)

func (*stuckFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o644
	out.Size = 48 << 20
	return 0
}

// Open asks for direct I/O: the read then waits in request_wait_answer,
// where a first signal turns the wait into D and SIGKILL stays pending
// until the connection answers or dies (a page-cache read would wait
// killably in folio_wait_bit_common instead).
func (*stuckFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

// Read never answers: the backend it would fetch from is "down". The
// kernel's reader waits for the page in D.
func (*stuckFile) Read(ctx context.Context, _ fs.FileHandle, _ []byte, _ int64) (fuse.ReadResult, syscall.Errno) {
	select {} // not even an interrupt is answered
}

// runFuseServer mounts the archive at its argument and serves it.
func runFuseServer() int {
	var p FreezeParams
	_ = reexec.Params(&p)
	name := p.Server
	if name == "" {
		name = "archivefs"
	}
	_ = reexec.SetComm(name)
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: %s MOUNTPOINT\n", name)
		return 2
	}
	file := p.File
	if file == "" {
		file = "report.csv"
	}
	server, err := fs.Mount(os.Args[1], &archiveRoot{file: file}, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: name, Name: name, AllowOther: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: mount: %v\n", name, err)
		return 1
	}
	server.Wait()
	return 0
}

// runReader reads its file over and over, as an indexer would; a read
// that fails (after the connection is aborted) is logged and retried.
func runReader() int {
	var p FreezeParams
	_ = reexec.Params(&p)
	name := p.Service
	if name == "" {
		name = "indexer"
	}
	_ = reexec.SetComm(name)
	if len(os.Args) < 3 {
		return 2
	}
	path := os.Args[2]
	buf := make([]byte, 64<<10)
	for {
		f, err := os.Open(path)
		if err == nil {
			_, err = f.Read(buf)
			f.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		}
		time.Sleep(2 * time.Second)
	}
}
