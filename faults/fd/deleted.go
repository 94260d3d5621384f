package fd

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

// DeletedParams are the `with:` of fd.deleted-open.
type DeletedParams struct {
	Mount   string    `yaml:"mount,omitempty" json:"mount,omitempty" doc:"where the small filesystem (a sized tmpfs) is mounted inside the host (default /srv/data); its parent must be private to the host"`
	Size    labs.Size `yaml:"size,omitempty" json:"size,omitempty" doc:"size of that filesystem (default 32Mi)"`
	Service string    `yaml:"service,omitempty" json:"service,omitempty" doc:"the process holding the deleted file, as ps shows it (default logger)"`
	File    string    `yaml:"file,omitempty" json:"file,omitempty" doc:"name of the file it fills and then deletes, in the mount (default app.log)"`
}

// Validate checks the params before anything is created.
func (p *DeletedParams) Validate() error {
	switch {
	case p.Mount != "" && (!filepath.IsAbs(p.Mount) || filepath.Clean(p.Mount) != p.Mount || p.Mount == "/"):
		return &labs.ParamError{Field: "mount", Msg: "want an absolute, clean path other than /"}
	case p.Size < 1<<20 || p.Size > 256<<20:
		return &labs.ParamError{Field: "size", Msg: "must be between 1Mi and 256Mi (it is filled in the host's memory)"}
	case !validComm(p.Service):
		return &labs.ParamError{Field: "service", Msg: "want 1-15 characters: letters, digits, - and _"}
	case p.File == "" || strings.Contains(p.File, "/"):
		return &labs.ParamError{Field: "file", Msg: "want a plain file name"}
	}
	return nil
}

type deletedState struct {
	PID   int    `json:"pid"`
	Comm  string `json:"comm"`
	Mount string `json:"mount"`
}

type deletedKind struct{}

const holderHelper = "fd.deleted-open"

func init() {
	faults.Register(labs.FaultKind{
		Name: "fd.deleted-open",
		Doc:  "a process fills a small filesystem of the host with a file, deletes it and keeps it open: df says full, du does not, lsof +L1 finds it",
		NewParams: func() any {
			return &DeletedParams{Mount: "/srv/data", Size: 32 << 20, Service: "logger", File: "app.log"}
		},
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "machine-side PID of the process holding the deleted file"},
			{Name: "ns_pid", Doc: "its PID as seen inside the host"},
			{Name: "service", Doc: "its name"},
			{Name: "mount", Doc: "the full filesystem's mount point inside the host"},
			{Name: "file", Doc: "the deleted file's path inside the host"},
			{Name: "fd", Doc: "the descriptor number it holds the file on"},
		},
	}, deletedKind{})
	reexec.Register(holderHelper, runHolder)
}

func (deletedKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*DeletedParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	if err := requirePrivate(h, p.Mount); err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	// The tmpfs lives in the host's mount namespace only: it disappears
	// with the host, nothing to record.
	if err := run(ctx, h, "mkdir", "-p", p.Mount); err != nil {
		return nil, err
	}
	if err := run(ctx, h, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", int64(p.Size)), "tmpfs", p.Mount); err != nil {
		return nil, err
	}
	file := filepath.Join(p.Mount, p.File)
	pid, err := startService(ctx, h, faults.ServiceSpec{Helper: holderHelper, Comm: p.Service, Args: []string{"--out", file}, Params: p}, nil)
	if err != nil {
		return nil, err
	}
	state, _ := json.Marshal(deletedState{PID: pid, Comm: p.Service, Mount: p.Mount})
	applied := &faults.Applied{State: state}
	// Observable: the filesystem has no room left and the file is gone
	// from its directory while a descriptor still holds it.
	var fdNum string
	err = poll(ctx, "the filesystem to fill with a deleted file", func() (bool, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(h.RootPath(p.Mount), &st); err != nil {
			return false, err
		}
		if st.Bavail != 0 {
			return false, nil
		}
		fdNum = deletedFD(pid, file)
		return fdNum != "", nil
	})
	if err != nil {
		return applied, err
	}
	ns, err := nsPID(pid)
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"pid": strconv.Itoa(pid), "ns_pid": strconv.Itoa(ns), "service": p.Service,
		"mount": p.Mount, "file": file, "fd": fdNum,
	}
	return applied, nil
}

// deletedFD returns the descriptor of pid that points at file, deleted.
func deletedFD(pid int, file string) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && t == file+" (deleted)" {
			return e.Name()
		}
	}
	return ""
}

// Revert stops the holder and unmounts the filesystem, if the host still
// runs; with the host gone, both went with it.
func (deletedKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	var s deletedState
	if len(state) == 0 || json.Unmarshal(state, &s) != nil || s.PID == 0 {
		return nil
	}
	if comm(s.PID) == s.Comm {
		if err := unix.Kill(s.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("stop %s: %w", s.Comm, err)
		}
	}
	h, err := env.Host(f.Host)
	if err != nil {
		return nil
	}
	// Best effort: the host's death unmounts it anyway.
	_ = h.Command(ctx, "umount", "-l", s.Mount).Run()
	return nil
}

// runHolder writes one file until the filesystem is full, deletes it
// (a log "rotated" by rm) and keeps writing to it now and then, as a
// logger that never reopens its log does.
func runHolder() int {
	var p DeletedParams
	_ = reexec.Params(&p)
	name := p.Service
	if name == "" {
		name = "logger"
	}
	_ = reexec.SetComm(name)
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	out := fs.String("out", "/srv/data/app.log", "")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	line := []byte(strings.Repeat("2026-11-30T07:00:00Z INFO request served in 3ms from 10.0.0.7\n", 64))
	for {
		if _, err := f.Write(line); err != nil {
			break // ENOSPC: the filesystem is full
		}
	}
	if err := os.Remove(*out); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	for {
		// Keeps the file busy; fails quietly while there is no room.
		_, _ = f.Write(line[:64])
		time.Sleep(time.Second)
	}
}
