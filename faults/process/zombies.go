package process

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

const (
	helperZombies = "process-zombies"
	// helperExit is a child that only takes its parent's name and exits:
	// the zombie left behind carries the service's comm, as a forked
	// worker's would.
	helperExit = "process-exit"
)

// ZombiesParams configure process.zombies.
type ZombiesParams struct {
	Service string        `yaml:"service,omitempty" json:"service,omitempty" doc:"the service's name as ps shows it (comm and argv[0])" template:"true"`
	Args    []string      `yaml:"args,omitempty" json:"args,omitempty" doc:"the service's arguments as ps shows them" template:"true"`
	Every   labs.Duration `yaml:"every,omitempty" json:"every,omitempty" doc:"one more zombie this often (default 500ms)"`
	Max     int           `yaml:"max,omitempty" json:"max,omitempty" doc:"stop at this many zombies (default 20)"`
}

// Validate checks the params before anything runs.
func (p *ZombiesParams) Validate() error {
	if err := validateService(p.Service); err != nil {
		return err
	}
	if p.Max < 1 || p.Max > 1000 {
		return &labs.ParamError{Field: "max", Msg: "between 1 and 1000"}
	}
	if p.Every.D() < 10*time.Millisecond {
		return &labs.ParamError{Field: "every", Msg: "at least 10ms"}
	}
	return nil
}

// zombiesHelperParams reach the helper out of sight.
type zombiesHelperParams struct {
	Comm  string        `json:"comm"`
	Every time.Duration `json:"every"`
	Max   int           `json:"max"`
}

type zombiesKind struct{}

func init() {
	reexec.Register(helperZombies, runZombies)
	reexec.Register(helperExit, runExit)
	faults.Register(labs.FaultKind{
		Name: "process.zombies",
		Doc:  "a service forks children that exit and never waits for them: zombies accumulate at a set rate up to a count",
		NewParams: func() any {
			return &ZombiesParams{Service: "worker", Args: []string{"--config", "/etc/worker.conf"},
				Every: labs.Duration(500 * time.Millisecond), Max: 20}
		},
		Facts: []labs.FactSpec{
			{Name: "parent_pid", Doc: "PID of the zombies' parent as seen inside the host"},
			{Name: "parent_machine_pid", Doc: "PID of the zombies' parent as seen from the machine (for probes)"},
			{Name: "parent_comm", Doc: "command name of the zombies' parent"},
			{Name: "max_zombies", Doc: "how many zombies the parent leaves at most"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, zombiesKind{})
}

func (zombiesKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*ZombiesParams)
	host, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	svc, err := startService(ctx, host, faults.ServiceSpec{
		Helper: helperZombies, Comm: p.Service, Args: p.Args,
		Params: zombiesHelperParams{Comm: p.Service, Every: p.Every.D(), Max: p.Max},
	})
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{State: marshalState(newServiceState(svc.MachinePID))}
	// Observable: the first zombies exist with the service as their parent.
	want := min(p.Max, 3)
	err = waitFor(ctx, "zombies of "+p.Service, func() (bool, error) {
		n, err := zombieChildren(svc.MachinePID)
		return n >= want, err
	})
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"parent_pid":         strconv.Itoa(svc.HostPID),
		"parent_machine_pid": strconv.Itoa(svc.MachinePID),
		"parent_comm":        p.Service,
		"max_zombies":        strconv.Itoa(p.Max),
	}
	return applied, nil
}

func (zombiesKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return revertService(state)
}

// zombieChildren counts the zombie children of a machine-side PID.
func zombieChildren(parent int) (int, error) {
	children, err := childrenOf(parent)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range children {
		if st, err := procState(c); err == nil && st == "Z" {
			n++
		}
	}
	return n, nil
}

// childrenOf lists the children of a process (every thread's).
func childrenOf(pid int) ([]int, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil {
		return nil, err
	}
	if len(tasks) == 0 {
		return nil, fmt.Errorf("process %d is gone", pid)
	}
	var out []int
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// runZombies is the leaking service: it forks a child every so often
// and never waits for any of them.
func runZombies() int {
	var p zombiesHelperParams
	if err := reexec.Params(&p); err != nil {
		return helperFail(err)
	}
	_ = reexec.SetComm(p.Comm)
	reportReady(nil)
	attr := &os.ProcAttr{
		Env:   []string{reexec.EnvHelper + "=" + helperExit, "PATH=/usr/bin:/bin"},
		Files: []*os.File{nil, nil, nil},
	}
	for made := 0; made < p.Max; made++ {
		// /proc/self/exe re-executes this very binary even where its
		// path is not visible inside the host.
		child, err := os.StartProcess("/proc/self/exe", []string{p.Comm}, attr)
		if err == nil {
			// Release only drops our handle; the child is never waited
			// for, which is the bug this service plays.
			child.Release()
		}
		time.Sleep(p.Every)
	}
	blockForever()
	return 0
}

// runExit takes the name it was started under and exits at once.
func runExit() int {
	_ = reexec.SetComm(filepath.Base(os.Args[0]))
	return 0
}
