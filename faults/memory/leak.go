package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// LeakParams are memory.leak's `with:` parameters.
type LeakParams struct {
	Process  string        `yaml:"process,omitempty" json:"process,omitempty" doc:"the leaking service's name (default importer); a supervisor restarts it when it dies"`
	Config   string        `yaml:"config,omitempty" json:"config,omitempty" doc:"its configuration file inside the host (default /etc/<process>.conf)"`
	Start    labs.Size     `yaml:"start,omitempty" json:"start,omitempty" doc:"memory it holds right after start (default 4Mi)"`
	Rate     labs.Size     `yaml:"rate,omitempty" json:"rate,omitempty" doc:"how much its RSS grows every second (default 1Mi)"`
	Ceiling  labs.Size     `yaml:"ceiling,omitempty" json:"ceiling,omitempty" doc:"the leak stops growing after this much (default 0: until the OOM killer stops it)"`
	Decoy    string        `yaml:"decoy,omitempty" json:"decoy,omitempty" doc:"a steady process with a larger but constant RSS (default cache; empty: none)"`
	DecoyRSS labs.Size     `yaml:"decoy_rss,omitempty" json:"decoy_rss,omitempty" doc:"the decoy's constant memory (default 32Mi)"`
	Restart  labs.Duration `yaml:"restart,omitempty" json:"restart,omitempty" doc:"the supervisor's first restart delay (default 1s)"`
}

// Validate checks the parameters before anything exists.
func (p *LeakParams) Validate() error {
	if err := validateService(p.Process, p.Config); err != nil {
		return err
	}
	if p.Rate < 64<<10 || p.Rate > 64<<20 {
		return &labs.ParamError{Field: "rate", Msg: "must be between 64Ki and 64Mi per second"}
	}
	if p.Decoy != "" && (!serviceNameRE.MatchString(p.Decoy) || p.Decoy == p.Process) {
		return &labs.ParamError{Field: "decoy", Msg: fmt.Sprintf("%q is not a service name different from process", p.Decoy)}
	}
	return validateRestart(p.Restart)
}

type leakKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "memory.leak",
		Doc: "a supervised service's RSS grows steadily toward its host's memory limit (rate and ceiling " +
			"configurable), next to a decoy whose RSS is larger but constant",
		NewParams: func() any {
			return &LeakParams{Process: "importer", Start: 4 << 20, Rate: 1 << 20, Decoy: "cache", DecoyRSS: 32 << 20, Restart: labs.Duration(time.Second)}
		},
		Facts: []labs.FactSpec{
			{Name: "process", Doc: "the leaking process's command name"},
			{Name: "pid", Doc: "its machine-side PID when up returned"},
			{Name: "rate_mib", Doc: "its growth in MiB per second"},
			{Name: "decoy", Doc: "the steady process's command name (empty without one)"},
			{Name: "decoy_pid", Doc: "its machine-side PID"},
			{Name: "limit_mib", Doc: "the host's memory limit in MiB"},
		},
	}, leakKind{})
}

func (leakKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*LeakParams)
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
		return nil, fmt.Errorf("host %s has no memory limit: set hosts.%s.memory", f.Host, f.Host)
	}
	facts := map[string]string{"process": p.Process, "limit_mib": mib(limit), "decoy": p.Decoy}
	if p.Decoy != "" {
		decoy := service{Name: p.Decoy, Config: "/etc/" + p.Decoy + ".conf",
			Content: fmt.Sprintf("# %s: in-memory cache, filled at start\nbuffer = %s\n", p.Decoy, p.DecoyRSS)}
		pid, err := decoy.start(ctx, h)
		if err != nil {
			return nil, err
		}
		facts["decoy_pid"] = strconv.Itoa(pid)
	}
	content := fmt.Sprintf("# %s: imports records and keeps them (history grows with every batch)\nbuffer = %s\nleak_per_second = %s\n", p.Process, p.Start, p.Rate)
	if p.Ceiling > 0 {
		content += fmt.Sprintf("leak_max = %s\n", p.Ceiling)
	}
	svc := supervised{Name: p.Process, Config: configPath(p.Process, p.Config), Content: content, Restart: p.Restart.D()}
	if err := svc.start(ctx, h); err != nil {
		return nil, err
	}
	// Observable: the same process's RSS has grown by two steps after it
	// had its start buffer (its log says ready), so start-up is not
	// mistaken for the leak.
	var pid int
	var first int64
	workerLog := h.RootPath(svc.logDir() + "/" + p.Process + ".log")
	err = pollUntil(ctx, 30*time.Second, func() (bool, string, error) {
		if pid == 0 {
			if b, _ := os.ReadFile(workerLog); !strings.Contains(string(b), "ready") {
				return false, p.Process + " has not started yet", nil
			}
			if pid = findProcess(dir, p.Process); pid == 0 {
				return false, "no " + p.Process + " process yet", nil
			}
			first = -1
		}
		rss, err := procStatus(pid, "VmRSS")
		if err != nil {
			pid = 0 // it died (or was not started yet): look again
			return false, p.Process + " is gone", nil
		}
		if first < 0 {
			first = rss
		}
		return rss-first >= 2*int64(p.Rate), fmt.Sprintf("%s RSS grew by %s MiB", p.Process, mib(rss-first)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("memory.leak on %s: %w", f.Host, err)
	}
	facts["pid"] = strconv.Itoa(pid)
	facts["rate_mib"] = strconv.FormatFloat(float64(p.Rate)/(1<<20), 'f', -1, 64)
	return &faults.Applied{Facts: facts}, nil
}

// Revert has nothing to undo: everything lives and dies with the host.
func (leakKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return nil
}
