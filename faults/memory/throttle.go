package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// ThrottleParams are cpu.throttle's `with:` parameters.
type ThrottleParams struct {
	Process string        `yaml:"process,omitempty" json:"process,omitempty" doc:"the latency-sensitive service's name (default api)"`
	Config  string        `yaml:"config,omitempty" json:"config,omitempty" doc:"its configuration file inside the host (default /etc/<process>.conf)"`
	Demand  labs.Duration `yaml:"demand,omitempty" json:"demand,omitempty" doc:"CPU time the service needs every second, in ten bursts (default 400ms, i.e. 0.4 cores); must exceed the host's cpu quota"`
}

// Validate checks the parameters before anything exists.
func (p *ThrottleParams) Validate() error {
	if err := validateService(p.Process, p.Config); err != nil {
		return err
	}
	if p.Demand.D() < 10*time.Millisecond || p.Demand.D() > 900*time.Millisecond {
		return &labs.ParamError{Field: "demand", Msg: "must be between 10ms and 900ms of CPU per second"}
	}
	return nil
}

type throttleKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "cpu.throttle",
		Doc: "a latency-sensitive service needs more CPU per period than its host's CFS quota allows; the kernel " +
			"throttles it (cpu.stat nr_throttled and throttled_time/throttled_usec grow)",
		NewParams: func() any { return &ThrottleParams{Process: "api", Demand: labs.Duration(400 * time.Millisecond)} },
		Facts: []labs.FactSpec{
			{Name: "process", Doc: "the throttled service's command name"},
			{Name: "pid", Doc: "its machine-side PID"},
			{Name: "quota_cores", Doc: "the host's CPU quota in cores, e.g. 0.1"},
			{Name: "demand_cores", Doc: "the CPU the service needs, in cores"},
			{Name: "quota_file", Doc: "the cgroup file holding the quota (cpu.max or cpu.cfs_quota_us)"},
			{Name: "config", Doc: "the service's configuration file inside the host"},
		},
	}, throttleKind{})
}

func (throttleKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*ThrottleParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	dir := h.CgroupDir("cpu")
	quota, limited, err := cpuQuota(dir)
	if err != nil {
		return nil, err
	}
	demand := p.Demand.D().Seconds()
	if !limited || quota >= demand {
		return nil, fmt.Errorf("host %s's cpu quota (%s) is not below the service's demand (%.2f cores): set hosts.%s.cpu lower", f.Host, coresText(quota, limited), demand, f.Host)
	}
	before, _, err := cpuThrottled(dir)
	if err != nil {
		return nil, err
	}
	svc := service{
		Name:    p.Process,
		Config:  configPath(p.Process, p.Config),
		Content: fmt.Sprintf("# %s: answers requests in bursts, ten per second\ncpu_per_second = %s\n", p.Process, time.Duration(p.Demand)),
	}
	pid, err := svc.start(ctx, h)
	if err != nil {
		return nil, err
	}
	// Observable: the kernel has throttled the cgroup a few periods.
	err = pollUntil(ctx, 30*time.Second, func() (bool, string, error) {
		n, _, err := cpuThrottled(dir)
		return n-before >= 3, fmt.Sprintf("nr_throttled +%d", n-before), err
	})
	if err != nil {
		return nil, fmt.Errorf("cpu.throttle on %s: %w", f.Host, err)
	}
	state, _ := json.Marshal(map[string]string{"cgroup": dir})
	return &faults.Applied{
		Facts: map[string]string{
			"process":      p.Process,
			"pid":          strconv.Itoa(pid),
			"quota_cores":  strconv.FormatFloat(quota, 'f', -1, 64),
			"demand_cores": strconv.FormatFloat(demand, 'f', -1, 64),
			"quota_file":   filesOf(dir).CPUQuota,
			"config":       svc.Config,
		},
		State: state,
	}, nil
}

func coresText(q float64, limited bool) string {
	if !limited {
		return "unlimited"
	}
	return strconv.FormatFloat(q, 'f', -1, 64) + " cores"
}

// Revert has nothing to undo: the service lives and dies with the host.
func (throttleKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return nil
}
