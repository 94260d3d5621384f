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

// OOMScoreParams are memory.oom-score's `with:` parameters.
type OOMScoreParams struct {
	Critical    string        `yaml:"critical,omitempty" json:"critical,omitempty" doc:"the critical, small service the OOM killer wrongly picks (default db); supervised"`
	CriticalRSS labs.Size     `yaml:"critical_rss,omitempty" json:"critical_rss,omitempty" doc:"memory it holds (default 24Mi)"`
	Adj         int           `yaml:"adj,omitempty" json:"adj,omitempty" doc:"the oom_score_adj its config sets by mistake (default 1000)"`
	Hog         string        `yaml:"hog,omitempty" json:"hog,omitempty" doc:"the service that really takes the memory (default reporter)"`
	HogRSS      labs.Size     `yaml:"hog_rss,omitempty" json:"hog_rss,omitempty" doc:"memory the hog holds (default 96Mi); with critical_rss it must exceed the host's limit, alone it must fit"`
	Restart     labs.Duration `yaml:"restart,omitempty" json:"restart,omitempty" doc:"the critical service's supervisor's first restart delay (default 1s)"`
}

// Validate checks the parameters before anything exists.
func (p *OOMScoreParams) Validate() error {
	if err := validateService(p.Critical, ""); err != nil {
		return &labs.ParamError{Field: "critical", Msg: err.(*labs.ParamError).Msg}
	}
	if !serviceNameRE.MatchString(p.Hog) || p.Hog == p.Critical {
		return &labs.ParamError{Field: "hog", Msg: fmt.Sprintf("%q is not a service name different from critical", p.Hog)}
	}
	if p.Adj < 1 || p.Adj > 1000 {
		return &labs.ParamError{Field: "adj", Msg: "must be from 1 to 1000 (raising needs no privilege; the point is a raised score)"}
	}
	if p.CriticalRSS < 1<<20 || p.HogRSS < 1<<20 {
		return &labs.ParamError{Field: "hog_rss", Msg: "critical_rss and hog_rss must be at least 1Mi"}
	}
	return validateRestart(p.Restart)
}

type oomScoreKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "memory.oom-score",
		Doc: "the OOM killer picks the wrong victim: a small critical service whose config raises its oom_score_adj " +
			"is killed (again at every restart) instead of the hog that really fills the host's memory",
		NewParams: func() any {
			return &OOMScoreParams{Critical: "db", CriticalRSS: 24 << 20, Adj: 1000, Hog: "reporter", HogRSS: 96 << 20, Restart: labs.Duration(time.Second)}
		},
		Facts: []labs.FactSpec{
			{Name: "victim", Doc: "the critical service the kernel kills"},
			{Name: "victim_pid", Doc: "machine-side PID of its first kill (as dmesg shows it)"},
			{Name: "adj", Doc: "the oom_score_adj it runs with"},
			{Name: "config", Doc: "its configuration file inside the host"},
			{Name: "hog", Doc: "the process that really holds the memory"},
			{Name: "hog_pid", Doc: "its machine-side PID"},
		},
	}, oomScoreKind{})
}

func (oomScoreKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*OOMScoreParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	dir := h.CgroupDir("memory")
	limit, limited, err := memoryLimit(dir)
	if err != nil {
		return nil, err
	}
	// Each Go service also needs ~8Mi of its own; the hog alone must fit
	// (so only the misplaced score makes the critical one die), both must not.
	const runtime = 8 << 20
	if !limited || int64(p.HogRSS)+runtime+16<<20 > limit || int64(p.HogRSS+p.CriticalRSS)+2*runtime < limit {
		return nil, fmt.Errorf("host %s's memory limit (%s) must fit hog_rss %s alone but not with critical_rss %s", f.Host, labs.Size(limit), p.HogRSS, p.CriticalRSS)
	}
	before, err := oomKills(dir)
	if err != nil {
		return nil, err
	}
	hog := service{Name: p.Hog, Config: "/etc/" + p.Hog + ".conf",
		Content: fmt.Sprintf("# %s: builds the nightly report in memory\nbuffer = %s\n", p.Hog, p.HogRSS)}
	hogPID, err := hog.start(ctx, h)
	if err != nil {
		return nil, err
	}
	// The critical service starts once the hog holds its memory, so the
	// first OOM is the critical one's allocation meeting a full cgroup.
	err = pollUntil(ctx, 30*time.Second, func() (bool, string, error) {
		rss, err := procStatus(hogPID, "VmRSS")
		return rss >= int64(p.HogRSS), fmt.Sprintf("%s RSS %s MiB", p.Hog, mib(rss)), err
	})
	if err != nil {
		return nil, fmt.Errorf("memory.oom-score on %s: %w", f.Host, err)
	}
	crit := supervised{
		Name:   p.Critical,
		Config: "/etc/" + p.Critical + ".conf",
		Content: fmt.Sprintf("# %s: the database everything depends on\nbuffer = %s\n# set by the packaging, \"so the OOM killer spares the important things\"\noom_score_adj = %d\n",
			p.Critical, p.CriticalRSS, p.Adj),
		Restart: p.Restart.D(),
	}
	if err := crit.start(ctx, h); err != nil {
		return nil, err
	}
	var victims []oomKill
	err = pollUntil(ctx, oomTimeout, func() (bool, string, error) {
		n, err := oomKills(dir)
		if err != nil || n == before {
			return false, "no OOM kill counted in " + dir, err
		}
		klog, err := kernelLog()
		if err != nil {
			return false, "", err
		}
		victims = oomKillsOf(klog, dir)
		return len(victims) > 0, "no OOM kill in the kernel log", nil
	})
	if err != nil {
		return nil, fmt.Errorf("memory.oom-score on %s: %w", f.Host, err)
	}
	if victims[0].Comm != p.Critical {
		return nil, fmt.Errorf("memory.oom-score on %s: the OOM killer chose %s, not %s", f.Host, victims[0].Comm, p.Critical)
	}
	return &faults.Applied{Facts: map[string]string{
		"victim":     p.Critical,
		"victim_pid": strconv.Itoa(victims[0].PID),
		"adj":        strconv.Itoa(p.Adj),
		"config":     crit.Config,
		"hog":        p.Hog,
		"hog_pid":    strconv.Itoa(hogPID),
	}}, nil
}

// Revert has nothing to undo: everything lives and dies with the host.
func (oomScoreKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return nil
}
