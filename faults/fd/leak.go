package fd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

// LeakParams are the `with:` of fd.leak.
type LeakParams struct {
	Service string `yaml:"service,omitempty" json:"service,omitempty" doc:"the leaking service's name as ps shows it (default worker)"`
	Limit   int    `yaml:"limit,omitempty" json:"limit,omitempty" doc:"RLIMIT_NOFILE, soft and hard, of the service (default 256)"`
	// HardLimit above Limit leaves room to raise the soft limit live
	// without CAP_SYS_RESOURCE, which containers often lack.
	HardLimit int    `yaml:"hard_limit,omitempty" json:"hard_limit,omitempty" doc:"hard RLIMIT_NOFILE (default: equal to limit); above limit, the soft limit can be raised live without CAP_SYS_RESOURCE"`
	Leak      string `yaml:"leak,omitempty" json:"leak,omitempty" doc:"what each request leaks: files or sockets (default files)"`
	Path      string `yaml:"path,omitempty" json:"path,omitempty" doc:"the file each request opens and never closes, when leak is files (default /etc/hosts)"`
	Log       string `yaml:"log,omitempty" json:"log,omitempty" doc:"the service's log inside the host (default /tmp/<service>.log); its directory must be private to the host"`
}

// Validate checks the params before anything is created.
func (p *LeakParams) Validate() error {
	switch {
	case p.Limit < 16 || p.Limit > 65536:
		return &labs.ParamError{Field: "limit", Msg: "must be between 16 and 65536 (the Go runtime needs a few descriptors of its own)"}
	case p.HardLimit != 0 && (p.HardLimit < p.Limit || p.HardLimit > 1<<20):
		return &labs.ParamError{Field: "hard_limit", Msg: "must be at least limit and at most 1048576"}
	case p.Leak != "files" && p.Leak != "sockets":
		return &labs.ParamError{Field: "leak", Msg: fmt.Sprintf("%q: want files or sockets", p.Leak)}
	case !validComm(p.Service):
		return &labs.ParamError{Field: "service", Msg: "want 1-15 characters: letters, digits, - and _"}
	}
	return nil
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

// leakState is what Revert gets back.
type leakState struct {
	PID int `json:"pid"`
}

type leakKind struct{}

const leakHelper = "fd.leak"

func init() {
	faults.Register(labs.FaultKind{
		Name: "fd.leak",
		Doc:  "a service leaks a file or socket per request under a low RLIMIT_NOFILE until open fails with EMFILE, then logs \"too many open files\" on every request",
		NewParams: func() any {
			return &LeakParams{Service: "worker", Limit: 256, Leak: "files", Path: "/etc/hosts"}
		},
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "machine-side PID of the leaking service"},
			{Name: "ns_pid", Doc: "PID of the leaking service as seen inside the host"},
			{Name: "limit", Doc: "its soft RLIMIT_NOFILE, the one it hits"},
			{Name: "hard_limit", Doc: "its hard RLIMIT_NOFILE"},
			{Name: "leak", Doc: "what it leaks: files or sockets"},
			{Name: "service", Doc: "its name"},
			{Name: "log", Doc: "its log file inside the host"},
		},
	}, leakKind{})
	reexec.Register(leakHelper, runLeaker)
}

func (leakKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*LeakParams)
	if p.Log == "" {
		p.Log = "/tmp/" + p.Service + ".log"
	}
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	if err := requirePrivate(h, p.Log); err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	log, err := openInHost(h, p.Log)
	if err != nil {
		return nil, fmt.Errorf("open the service log: %w", err)
	}
	defer log.Close()
	if p.HardLimit == 0 {
		p.HardLimit = p.Limit
	}
	args := []string{"--max-open", strconv.Itoa(p.Limit), "--leak", p.Leak}
	if p.HardLimit != p.Limit {
		args = append(args, "--max-open-hard", strconv.Itoa(p.HardLimit))
	}
	if p.Leak == "files" {
		args = append(args, "--data", p.Path)
	}
	pid, err := startService(ctx, h, faults.ServiceSpec{Helper: leakHelper, Comm: p.Service, Args: args, Params: p}, log)
	if err != nil {
		return nil, err
	}
	state, _ := json.Marshal(leakState{PID: pid})
	applied := &faults.Applied{State: state}
	// Observable: every descriptor below the limit is taken, and the
	// service has said so in its log.
	err = poll(ctx, "the service to reach its fd limit", func() (bool, error) {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return false, err
		}
		return len(ents) >= p.Limit, nil
	})
	if err != nil {
		return applied, err
	}
	ns, err := nsPID(pid)
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"pid": strconv.Itoa(pid), "ns_pid": strconv.Itoa(ns), "limit": strconv.Itoa(p.Limit), "hard_limit": strconv.Itoa(p.HardLimit),
		"leak": p.Leak, "service": p.Service, "log": p.Log,
	}
	return applied, nil
}

// Revert stops the service; the host's teardown would too, but a lab may
// revert a fault on a living host.
func (leakKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	var s leakState
	if len(state) == 0 || json.Unmarshal(state, &s) != nil || s.PID == 0 {
		return nil
	}
	p := LeakParams{Service: "worker"}
	if lp, ok := f.With.(*LeakParams); ok {
		p = *lp
	}
	// Only the service we started: a reused PID has another name.
	if comm(s.PID) != p.Service {
		return nil
	}
	if err := unix.Kill(s.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop %s: %w", p.Service, err)
	}
	return nil
}

// leakArgs are what the leaker reads from its command line; they are what
// a real service would show in ps.
type leakArgs struct {
	maxOpen int
	hard    int
	leak    string
	data    string
}

// runLeaker is the leaking service. It lowers its own RLIMIT_NOFILE (soft
// and hard, after the Go runtime raised soft to hard at start), then serves
// "requests", each leaking one descriptor, fast until EMFILE and then
// twice a second, logging every failure as a real service would.
func runLeaker() int {
	var a leakArgs
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	fs.IntVar(&a.maxOpen, "max-open", 256, "")
	fs.IntVar(&a.hard, "max-open-hard", 0, "")
	fs.StringVar(&a.leak, "leak", "files", "")
	fs.StringVar(&a.data, "data", "/etc/hosts", "")
	var p LeakParams
	_ = reexec.Params(&p) // the command line carries everything needed
	name := p.Service
	if name == "" {
		name = "worker"
	}
	_ = reexec.SetComm(name)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if a.hard < a.maxOpen {
		a.hard = a.maxOpen
	}
	lim := unix.Rlimit{Cur: uint64(a.maxOpen), Max: uint64(a.hard)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(os.Stderr, "%s: setrlimit: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "%s: started, serving requests\n", name)
	failing := false
	for n := 1; ; n++ {
		err := leakOne(a)
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "%s %s request %d: %v\n", time.Now().Format(time.RFC3339), name, n, err)
			failing = true
		case failing:
			fmt.Fprintf(os.Stderr, "%s %s request %d: ok\n", time.Now().Format(time.RFC3339), name, n)
		}
		if failing {
			time.Sleep(500 * time.Millisecond) // a client's retry interval, not readiness
		} else {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// leakOne serves one request and "forgets" to close what it opened.
func leakOne(a leakArgs) error {
	if a.leak == "sockets" {
		if _, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		return nil
	}
	if _, err := unix.Open(a.data, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return &os.PathError{Op: "open", Path: a.data, Err: err}
	}
	return nil
}
