package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

const helperPidsExhaust = "process-pids-exhaust"

// PidsExhaustParams configure pids.exhaust.
type PidsExhaustParams struct {
	Service string        `yaml:"service,omitempty" json:"service,omitempty" doc:"the spawner's name as ps shows it (comm and argv[0])" template:"true"`
	Args    []string      `yaml:"args,omitempty" json:"args,omitempty" doc:"the spawner's arguments as ps shows them" template:"true"`
	Job     []string      `yaml:"job,omitempty" json:"job,omitempty" doc:"argv of each job the spawner starts and never reaps; jobs never end (default [sleep, infinity])" template:"true"`
	Every   labs.Duration `yaml:"every,omitempty" json:"every,omitempty" doc:"one more job this often, and the back-off after a failed fork (default 20ms)"`
	Reserve int           `yaml:"reserve,omitempty" json:"reserve,omitempty" doc:"pids the spawner leaves free under the host's limit (default 0: it forks until the kernel refuses; then nothing at all can start in the host)"`
}

// Validate checks the params before anything runs.
func (p *PidsExhaustParams) Validate() error {
	if err := validateService(p.Service); err != nil {
		return err
	}
	if len(p.Job) == 0 {
		return &labs.ParamError{Field: "job", Msg: "name the job's command"}
	}
	if p.Every.D() < time.Millisecond {
		return &labs.ParamError{Field: "every", Msg: "at least 1ms"}
	}
	if p.Reserve < 0 {
		return &labs.ParamError{Field: "reserve", Msg: "must not be negative"}
	}
	return nil
}

type pidsHelperParams struct {
	Comm    string        `json:"comm"`
	Job     []string      `json:"job"`
	Every   time.Duration `json:"every"`
	Reserve int           `json:"reserve"`
}

type pidsExhaustKind struct{}

func init() {
	reexec.Register(helperPidsExhaust, runPidsExhaust)
	faults.Register(labs.FaultKind{
		Name: "pids.exhaust",
		Doc: "a spawner starts jobs that never end until the host's pids cgroup is full (less an optional reserve): " +
			"forks in the host fail with EAGAIN (Resource temporarily unavailable), pids.events max moves; the machine is not affected",
		NewParams: func() any {
			return &PidsExhaustParams{Service: "jobrunner", Args: []string{"--queue", "default"},
				Job: []string{"sleep", "infinity"}, Every: labs.Duration(20 * time.Millisecond)}
		},
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "the spawner's PID as seen inside the host (also its process group: the jobs are in it)"},
			{Name: "machine_pid", Doc: "the spawner's PID as seen from the machine (for probes)"},
			{Name: "comm", Doc: "the spawner's command name"},
			{Name: "job_comm", Doc: "the jobs' command name"},
			{Name: "limit", Doc: "the host's pids limit (pids.max)"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, pidsExhaustKind{})
}

func (pidsExhaustKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*PidsExhaustParams)
	host, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	dir := host.CgroupDir("pids")
	limit, err := readPidsFile(filepath.Join(dir, "pids.max"))
	if err != nil {
		return nil, fmt.Errorf("the host's pids limit: %w", err)
	}
	if limit <= p.Reserve+2 {
		return nil, fmt.Errorf("the host's pids limit %d leaves no room for a spawner with reserve %d", limit, p.Reserve)
	}
	svc, err := startService(ctx, host, faults.ServiceSpec{Helper: helperPidsExhaust, Comm: p.Service, Args: p.Args,
		Params: pidsHelperParams{Comm: p.Service, Job: p.Job, Every: p.Every.D(), Reserve: p.Reserve}})
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{State: marshalState(newServiceState(svc.MachinePID))}
	// Observable: the host's cgroup holds as many tasks as the spawner
	// lets it (pids.current counts threads too, and the kernel's count is
	// what forks are refused by).
	err = waitFor(ctx, "pids of the host filled", func() (bool, error) {
		n, err := readPidsFile(filepath.Join(dir, "pids.current"))
		return n >= limit-p.Reserve, err
	})
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"pid":         strconv.Itoa(svc.HostPID),
		"machine_pid": strconv.Itoa(svc.MachinePID),
		"comm":        p.Service,
		"job_comm":    filepath.Base(p.Job[0]),
		"limit":       strconv.Itoa(limit),
	}
	return applied, nil
}

// Revert kills the spawner; its jobs die with the host (they may have
// been re-parented to the host's init once the spawner is gone).
func (pidsExhaustKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return revertService(state)
}

// readPidsFile reads pids.max or pids.current ("max" reads as a very large
// limit).
func readPidsFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 1 << 30, nil
	}
	return strconv.Atoi(s)
}

// hostPidsFiles finds the pids files of the host's own cgroup as the host
// sees them (v1: /sys/fs/cgroup/pids/, v2: /sys/fs/cgroup/).
func hostPidsFiles() (current, max string) {
	for _, dir := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(dir, "pids.max")); err == nil {
			return filepath.Join(dir, "pids.current"), filepath.Join(dir, "pids.max")
		}
	}
	return "", ""
}

// runPidsExhaust is the job runner whose jobs never finish: it starts
// another one every so often, never reaps, and backs off when the kernel
// refuses the fork.
func runPidsExhaust() int {
	var p pidsHelperParams
	if err := reexec.Params(&p); err != nil {
		return helperFail(err)
	}
	_ = reexec.SetComm(p.Comm)
	currentFile, maxFile := hostPidsFiles()
	if currentFile == "" {
		return helperFail(errors.New("no pids cgroup files under /sys/fs/cgroup"))
	}
	path, err := lookPath(p.Job[0])
	if err != nil {
		return helperFail(err)
	}
	reportReady(nil)
	attr := &os.ProcAttr{
		Env:   []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []*os.File{nil, nil, nil},
	}
	for {
		if p.Reserve > 0 {
			cur, err1 := readPidsFile(currentFile)
			limit, err2 := readPidsFile(maxFile)
			if err1 == nil && err2 == nil && cur+p.Reserve >= limit {
				time.Sleep(p.Every)
				continue
			}
		}
		child, err := os.StartProcess(path, p.Job, attr)
		if err == nil {
			child.Release()
		} else if !errors.Is(err, syscall.EAGAIN) {
			// Anything but a full cgroup is a broken lab: stop spawning,
			// keep running so the lab still shows a spawner.
			blockForever()
		}
		time.Sleep(p.Every)
	}
}

func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range []string{"/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && !fi.IsDir() {
			return filepath.Join(dir, name), nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}
