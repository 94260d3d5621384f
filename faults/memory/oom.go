// Package memory holds the fault kinds of the "memory and cgroups"
// family: a worker OOM-killed by its cgroup's limit (memory.oom), a slow
// leak (memory.leak), and CPU throttling under a quota (cpu.throttle).
// The kernel produces every symptom: the kinds only start ordinary
// processes inside a host whose cgroup has a limit.
package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// OOMParams are memory.oom's `with:` parameters.
type OOMParams struct {
	Process  string        `yaml:"process,omitempty" json:"process,omitempty" doc:"the service's name (its comm, as ps and the kernel log show it; default worker)"`
	Config   string        `yaml:"config,omitempty" json:"config,omitempty" doc:"its configuration file inside the host (default /etc/<process>.conf)"`
	Allocate labs.Size     `yaml:"allocate,omitempty" json:"allocate,omitempty" doc:"memory the worker allocates and touches at start (default 256Mi); must exceed the host's memory limit"`
	Restart  labs.Duration `yaml:"restart,omitempty" json:"restart,omitempty" doc:"the supervisor's first restart delay (default 1s); it doubles after each crash, up to 8 times this"`
}

// serviceNameRE: a comm is at most 15 bytes; keep names plain.
var serviceNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,14}$`)

// Validate checks the parameters before anything exists.
func (p *OOMParams) Validate() error {
	if err := validateService(p.Process, p.Config); err != nil {
		return err
	}
	if p.Allocate < 1<<20 {
		return &labs.ParamError{Field: "allocate", Msg: "must be at least 1Mi"}
	}
	return validateRestart(p.Restart)
}

func validateService(process, config string) error {
	if !serviceNameRE.MatchString(process) {
		return &labs.ParamError{Field: "process", Msg: fmt.Sprintf("%q is not a service name: lowercase letters, digits, - and _, at most 15", process)}
	}
	if config != "" && !strings.HasPrefix(config, "/") {
		return &labs.ParamError{Field: "config", Msg: "must be an absolute path inside the host"}
	}
	return nil
}

func validateRestart(d labs.Duration) error {
	if d.D() < 100*time.Millisecond || d.D() > time.Minute {
		return &labs.ParamError{Field: "restart", Msg: "must be between 100ms and 1m"}
	}
	return nil
}

func configPath(process, config string) string {
	if config != "" {
		return config
	}
	return "/etc/" + process + ".conf"
}

type oomKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "memory.oom",
		Doc: "a supervised worker allocates more memory than its host's cgroup allows and is killed by the " +
			"kernel's OOM killer, again at every restart (dmesg shows the kill; the cgroup's oom_kill counter moves)",
		NewParams: func() any {
			return &OOMParams{Process: "worker", Allocate: 256 << 20, Restart: labs.Duration(time.Second)}
		},
		Facts: []labs.FactSpec{
			{Name: "victim", Doc: "the killed process's command name, as the kernel log shows it"},
			{Name: "victim_pid", Doc: "machine-side PID of the first kill (the PID dmesg shows)"},
			{Name: "victim_pids", Doc: "machine-side PIDs killed before up returned, comma-separated"},
			{Name: "kills", Doc: "OOM kills counted in the host's cgroup when up returned"},
			{Name: "limit_bytes", Doc: "the host's memory limit in bytes"},
			{Name: "limit_mib", Doc: "the host's memory limit in MiB"},
			{Name: "allocate_bytes", Doc: "what the worker tries to allocate, in bytes"},
			{Name: "config", Doc: "the worker's configuration file inside the host"},
			{Name: "log", Doc: "the supervisor's log inside the host"},
			{Name: "limit_file", Doc: "the cgroup file holding the limit (memory.max or memory.limit_in_bytes)"},
			{Name: "counter_file", Doc: "the cgroup file counting OOM kills (memory.events or memory.oom_control)"},
		},
	}, oomKind{})
}

// oomState is memory.oom's ledger record.
type oomState struct {
	Cgroup string `json:"cgroup"`
}

// oomTimeout bounds the wait for the first kill: the worker's start plus
// its allocation take well under a second; the rest is for a loaded machine.
const oomTimeout = 30 * time.Second

func (oomKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*OOMParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	dir := h.CgroupDir("memory")
	limit, limited, err := memoryLimit(dir)
	if err != nil {
		return nil, err
	}
	if !limited {
		return nil, fmt.Errorf("host %s has no memory limit: set hosts.%s.memory so the OOM killer has a limit to enforce", f.Host, f.Host)
	}
	if int64(p.Allocate) <= limit {
		return nil, fmt.Errorf("allocate %s does not exceed host %s's memory limit %s: the worker would never be killed", p.Allocate, f.Host, labs.Size(limit))
	}
	before, err := oomKills(dir)
	if err != nil {
		return nil, err
	}
	svc := supervised{
		Name:    p.Process,
		Config:  configPath(p.Process, p.Config),
		Content: fmt.Sprintf("# %s: batch worker\n# memory kept for one batch\nbuffer = %s\n", p.Process, p.Allocate),
		Restart: p.Restart.D(),
	}
	if err := svc.start(ctx, h); err != nil {
		return nil, err
	}
	// Observable means both the counter moved and the kernel log names the
	// victim: the two things the learner is sent to find.
	var kills int64
	var victims []oomKill
	err = pollUntil(ctx, oomTimeout, func() (bool, string, error) {
		n, err := oomKills(dir)
		if err != nil {
			return false, "", err
		}
		kills = n - before
		if kills == 0 {
			return false, "no OOM kill counted in " + dir, nil
		}
		klog, err := kernelLog()
		if err != nil {
			return false, "", err
		}
		victims = oomKillsOf(klog, dir)
		if len(victims) == 0 {
			return false, fmt.Sprintf("%d OOM kills counted but none in the kernel log", kills), nil
		}
		return true, "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("memory.oom on %s: %w", f.Host, err)
	}
	pids := make([]string, len(victims))
	for i, v := range victims {
		pids[i] = strconv.Itoa(v.PID)
	}
	files := filesOf(dir)
	state, _ := json.Marshal(oomState{Cgroup: dir})
	return &faults.Applied{
		Facts: map[string]string{
			"victim":         victims[0].Comm,
			"victim_pid":     pids[0],
			"victim_pids":    strings.Join(pids, ","),
			"kills":          strconv.FormatInt(kills, 10),
			"limit_bytes":    strconv.FormatInt(limit, 10),
			"limit_mib":      strconv.FormatFloat(float64(limit)/(1<<20), 'f', -1, 64),
			"allocate_bytes": strconv.FormatInt(int64(p.Allocate), 10),
			"config":         svc.Config,
			"log":            svc.supervisorLog(),
			"limit_file":     files.MemoryLimit,
			"counter_file":   files.OOMCounter,
		},
		State: state,
	}, nil
}

// Revert has nothing to undo: the supervisor, the worker, the config and
// the logs all live in the host and go with it.
func (oomKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return nil
}
