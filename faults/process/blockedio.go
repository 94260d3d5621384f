package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

const helperBlockedIO = "process-blocked-io"

// BlockedIOParams configure process.blocked-io.
type BlockedIOParams struct {
	Service string   `yaml:"service,omitempty" json:"service,omitempty" doc:"the service's name as ps shows it (comm and argv[0])" template:"true"`
	Args    []string `yaml:"args,omitempty" json:"args,omitempty" doc:"the service's arguments as ps shows them" template:"true"`
	FIFO    string   `yaml:"fifo,omitempty" json:"fifo,omitempty" doc:"the named pipe (inside the host) the service reads its jobs from; nobody writes it (default /tmp/worker/jobs)" template:"true"`
	Done    string   `yaml:"done,omitempty" json:"done,omitempty" doc:"the file (inside the host) the service appends a line to for every job it processed (default /tmp/worker/done.log)" template:"true"`
}

// Validate checks the params before anything runs.
func (p *BlockedIOParams) Validate() error {
	if err := validateService(p.Service); err != nil {
		return err
	}
	for field, path := range map[string]string{"fifo": p.FIFO, "done": p.Done} {
		if !strings.Contains(path, "{{") && (!filepath.IsAbs(path) || filepath.Clean(path) != path) {
			return &labs.ParamError{Field: field, Msg: "an absolute, clean path"}
		}
	}
	return nil
}

type blockedIOHelperParams struct {
	Comm string `json:"comm"`
	FIFO string `json:"fifo"`
	Done string `json:"done"`
}

type blockedIOKind struct{}

func init() {
	reexec.Register(helperBlockedIO, runBlockedIO)
	faults.Register(labs.FaultKind{
		Name: "process.blocked-io",
		Doc:  "a service sits blocked in read(2) on a named pipe nobody writes: strace shows the read, /proc/PID/fd the pipe",
		NewParams: func() any {
			return &BlockedIOParams{Service: "worker", Args: []string{"--queue", "/tmp/worker/jobs"}, FIFO: "/tmp/worker/jobs", Done: "/tmp/worker/done.log"}
		},
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "the service's PID as seen inside the host"},
			{Name: "machine_pid", Doc: "the service's PID as seen from the machine (for probes)"},
			{Name: "comm", Doc: "the service's command name"},
			{Name: "fd", Doc: "the file descriptor the service blocks reading"},
			{Name: "fifo", Doc: "the named pipe that descriptor is open on (path inside the host)"},
			{Name: "done", Doc: "the file the service appends to for each job it processed"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, blockedIOKind{})
}

func (blockedIOKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*BlockedIOParams)
	host, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	svc, err := startService(ctx, host, faults.ServiceSpec{Helper: helperBlockedIO, Comm: p.Service, Args: p.Args,
		Params: blockedIOHelperParams{Comm: p.Service, FIFO: p.FIFO, Done: p.Done}})
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{State: marshalState(newServiceState(svc.MachinePID))}
	fd, err := strconv.Atoi(svc.Extra["fd"])
	if err != nil {
		return applied, fmt.Errorf("service %s reported no fd: %q", p.Service, svc.Extra["fd"])
	}
	// Observable: the main thread sits in read(2) on that descriptor.
	err = waitFor(ctx, p.Service+" blocked in read", func() (bool, error) {
		return inSyscall(svc.MachinePID, unix.SYS_READ, fd)
	})
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"pid":         strconv.Itoa(svc.HostPID),
		"machine_pid": strconv.Itoa(svc.MachinePID),
		"comm":        p.Service,
		"fd":          strconv.Itoa(fd),
		"fifo":        p.FIFO,
		"done":        p.Done,
	}
	return applied, nil
}

func (blockedIOKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return revertService(state)
}

// inSyscall reports whether a thread (machine-side id, under /proc) is
// blocked in syscall nr with first argument arg0, as /proc/TID/syscall
// shows it.
func inSyscall(tid int, nr int, arg0 int) (bool, error) {
	return inSyscallAt(fmt.Sprintf("/proc/%d/syscall", tid), nr, arg0)
}

func inSyscallAt(path string, nr int, arg0 int) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 || f[0] != strconv.Itoa(nr) {
		return false, nil
	}
	if arg0 < 0 {
		return true, nil
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
	return err == nil && v == uint64(arg0), nil
}

// runBlockedIO is the worker waiting for jobs on a named pipe whose
// producer never comes. It opens the pipe read-write (a common idiom to
// avoid EOF when writers come and go), so read(2) blocks instead of
// returning 0, and reads with raw syscalls on the main thread: Go's
// poller would show epoll_wait, not the read a C worker shows.
func runBlockedIO() int {
	var p blockedIOHelperParams
	if err := reexec.Params(&p); err != nil {
		return helperFail(err)
	}
	_ = reexec.SetComm(p.Comm)
	if err := os.MkdirAll(filepath.Dir(p.FIFO), 0o755); err != nil {
		return helperFail(err)
	}
	if err := unix.Mkfifo(p.FIFO, 0o660); err != nil && !errors.Is(err, unix.EEXIST) {
		return helperFail(fmt.Errorf("mkfifo %s: %w", p.FIFO, err))
	}
	fd, err := unix.Open(p.FIFO, unix.O_RDWR, 0)
	if err != nil {
		return helperFail(fmt.Errorf("open %s: %w", p.FIFO, err))
	}
	reportReady(map[string]string{"fd": strconv.Itoa(fd)})
	buf := make([]byte, 4096)
	var pending []byte
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			return 1
		}
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			job := strings.TrimSpace(string(pending[:i]))
			pending = pending[i+1:]
			if job == "" {
				continue
			}
			if err := appendLine(p.Done, "processed "+job); err != nil {
				return 1
			}
		}
	}
}

func appendLine(path, line string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
