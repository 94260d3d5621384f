package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

const (
	helperOrphaner     = "process-orphaner"
	helperOrphanParent = "process-orphan-parent"
	helperOrphan       = "process-orphan"
)

// The host's init (runner/sandbox, noreap_linux.go) stops reaping on
// pauseReapSignal and resumes (reaping at once) on resumeReapSignal. The
// numbers must match that file; faults do not import runner.
const (
	pauseReapSignal  = unix.Signal(40) // SIGRTMIN+6
	resumeReapSignal = unix.Signal(41) // SIGRTMIN+7
)

// InitNoReapParams configure process.init-no-reap.
type InitNoReapParams struct {
	Service string        `yaml:"service,omitempty" json:"service,omitempty" doc:"the service whose children leave orphans behind, as ps shows it" template:"true"`
	Args    []string      `yaml:"args,omitempty" json:"args,omitempty" doc:"the service's arguments as ps shows them" template:"true"`
	Orphan  string        `yaml:"orphan,omitempty" json:"orphan,omitempty" doc:"command name of the orphaned processes (they become zombies of PID 1) (default healthcheck)" template:"true"`
	Every   labs.Duration `yaml:"every,omitempty" json:"every,omitempty" doc:"one more orphan this often (default 1s)"`
	Max     int           `yaml:"max,omitempty" json:"max,omitempty" doc:"stop after this many orphans (default 1000)"`
}

// Validate checks the params before anything runs.
func (p *InitNoReapParams) Validate() error {
	if err := validateService(p.Service); err != nil {
		return err
	}
	if err := validateService(p.Orphan); err != nil {
		return &labs.ParamError{Field: "orphan", Msg: err.(*labs.ParamError).Msg}
	}
	if p.Every.D() < 10*time.Millisecond {
		return &labs.ParamError{Field: "every", Msg: "at least 10ms"}
	}
	if p.Max < 1 {
		return &labs.ParamError{Field: "max", Msg: "at least 1"}
	}
	return nil
}

type orphanerParams struct {
	Comm   string        `json:"comm"`
	Orphan string        `json:"orphan"`
	Every  time.Duration `json:"every"`
	Max    int           `json:"max"`
}

type initNoReapKind struct{}

func init() {
	reexec.Register(helperOrphaner, runOrphaner)
	reexec.Register(helperOrphanParent, runOrphanParent)
	reexec.Register(helperOrphan, runOrphan)
	faults.Register(labs.FaultKind{
		Name: "process.init-no-reap",
		Doc: "the host's PID 1 stops reaping orphans (as an application or shell script run as PID 1 does), and a " +
			"service keeps double-forking helpers that exit: they become zombies whose parent is PID 1",
		NewParams: func() any {
			return &InitNoReapParams{Service: "monitor", Args: []string{"--interval", "1s"}, Orphan: "healthcheck",
				Every: labs.Duration(time.Second), Max: 1000}
		},
		Facts: []labs.FactSpec{
			{Name: "zombie_ppid", Doc: "the zombies' parent PID as seen inside the host (PID 1)"},
			{Name: "init_comm", Doc: "command name of the host's PID 1"},
			{Name: "service_pid", Doc: "PID (inside the host) of the service that leaves orphans"},
			{Name: "service_machine_pid", Doc: "PID of that service as seen from the machine (for probes)"},
			{Name: "service_comm", Doc: "command name of that service"},
			{Name: "orphan_comm", Doc: "command name of the orphans (the zombies)"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, initNoReapKind{})
}

// noReapState is what Revert needs: the init to switch back and the service.
type noReapState struct {
	InitPID       int          `json:"init_pid"`
	InitStartTime uint64       `json:"init_start_time"`
	Service       serviceState `json:"service"`
}

func (initNoReapKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*InitNoReapParams)
	host, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	initPID := host.InitPID()
	st := noReapState{InitPID: initPID}
	if st.InitStartTime, err = startTime(initPID); err != nil {
		return nil, fmt.Errorf("the host's init: %w", err)
	}
	applied := &faults.Applied{State: marshalState(st)}
	if err := unix.Kill(initPID, pauseReapSignal); err != nil {
		return applied, fmt.Errorf("tell the host's init to stop reaping: %w", err)
	}
	svc, err := startService(ctx, host, faults.ServiceSpec{Helper: helperOrphaner, Comm: p.Service, Args: p.Args,
		Params: orphanerParams{Comm: p.Service, Orphan: p.Orphan, Every: p.Every.D(), Max: p.Max}})
	if err != nil {
		return applied, err
	}
	st.Service = newServiceState(svc.MachinePID)
	applied.State = marshalState(st)
	// Observable: zombies whose parent is the host's PID 1. The first
	// orphans may still be reaped if they beat the pause signal; later
	// ones stay.
	want := min(p.Max, 2)
	err = waitFor(ctx, "zombies of the host's PID 1", func() (bool, error) {
		n, err := zombieChildren(initPID)
		return n >= want, err
	})
	if err != nil {
		return applied, err
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", initPID))
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"zombie_ppid":         "1",
		"init_comm":           strings.TrimSpace(string(comm)),
		"service_pid":         strconv.Itoa(svc.HostPID),
		"service_machine_pid": strconv.Itoa(svc.MachinePID),
		"service_comm":        p.Service,
		"orphan_comm":         p.Orphan,
	}
	return applied, nil
}

// Revert stops the service and lets the init reap again (it reaps the
// zombies at once). A host already gone is success.
func (initNoReapKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil
	}
	var st noReapState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("init-no-reap state: %w", err)
	}
	if err := revertService(marshalState(st.Service)); err != nil {
		return err
	}
	if now, err := startTime(st.InitPID); err != nil || now != st.InitStartTime {
		return nil
	}
	if err := unix.Kill(st.InitPID, resumeReapSignal); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("tell the host's init to reap again: %w", err)
	}
	return nil
}

// runOrphaner is the service: every so often it starts a helper the
// "daemonize" way — the child starts the real job and exits at once, the
// service waits for that child (it reaps what it knows), and the job,
// orphaned, ends up a child of PID 1.
func runOrphaner() int {
	var p orphanerParams
	if err := reexec.Params(&p); err != nil {
		return helperFail(err)
	}
	_ = reexec.SetComm(p.Comm)
	reportReady(nil)
	for made := 0; made < p.Max; made++ {
		cmd := exec.Command("/proc/self/exe")
		cmd.Args = []string{p.Orphan, "--daemonize"}
		cmd.Env = []string{reexec.EnvHelper + "=" + helperOrphanParent}
		_ = cmd.Run()
		time.Sleep(p.Every)
	}
	blockForever()
	return 0
}

// runOrphanParent starts the job and exits without waiting for it.
func runOrphanParent() int {
	name := filepath.Base(os.Args[0])
	_ = reexec.SetComm(name)
	attr := &os.ProcAttr{
		Env:   []string{reexec.EnvHelper + "=" + helperOrphan},
		Files: []*os.File{nil, nil, nil},
	}
	child, err := os.StartProcess("/proc/self/exe", []string{name}, attr)
	if err != nil {
		return 1
	}
	child.Release()
	return 0
}

// runOrphan is the job: it finishes only once it is an orphan, so the
// zombie it leaves is PID 1's, not its short-lived parent's.
func runOrphan() int {
	_ = reexec.SetComm(filepath.Base(os.Args[0]))
	deadline := time.Now().Add(10 * time.Second)
	for os.Getppid() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return 0
}
