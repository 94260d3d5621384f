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

// VszRssParams are memory.vsz-rss's `with:` parameters.
type VszRssParams struct {
	Mapper   string    `yaml:"mapper,omitempty" json:"mapper,omitempty" doc:"name of the process that maps address space it never touches (default indexer)"`
	Reserve  labs.Size `yaml:"reserve,omitempty" json:"reserve,omitempty" doc:"address space it maps (default 8Gi): huge VSZ, no RSS"`
	Holder   string    `yaml:"holder,omitempty" json:"holder,omitempty" doc:"name of the process that really holds memory (default sessiond)"`
	Resident labs.Size `yaml:"resident,omitempty" json:"resident,omitempty" doc:"memory it allocates and touches (default 48Mi); must fit the host's limit"`
}

// Validate checks the parameters before anything exists.
func (p *VszRssParams) Validate() error {
	if !serviceNameRE.MatchString(p.Mapper) {
		return &labs.ParamError{Field: "mapper", Msg: fmt.Sprintf("%q is not a service name", p.Mapper)}
	}
	if !serviceNameRE.MatchString(p.Holder) || p.Holder == p.Mapper {
		return &labs.ParamError{Field: "holder", Msg: fmt.Sprintf("%q is not a service name different from mapper", p.Holder)}
	}
	if p.Reserve < 1<<30 || p.Reserve > 64<<30 {
		return &labs.ParamError{Field: "reserve", Msg: "must be between 1Gi and 64Gi"}
	}
	if p.Resident < 4<<20 {
		return &labs.ParamError{Field: "resident", Msg: "must be at least 4Mi"}
	}
	return nil
}

type vszRssKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "memory.vsz-rss",
		Doc: "one process maps gigabytes of address space it never touches (huge VSZ, tiny RSS) while another " +
			"holds real resident memory: which one really uses memory?",
		NewParams: func() any {
			return &VszRssParams{Mapper: "indexer", Reserve: 8 << 30, Holder: "sessiond", Resident: 48 << 20}
		},
		Facts: []labs.FactSpec{
			{Name: "mapper", Doc: "the process with the huge VSZ"},
			{Name: "mapper_pid", Doc: "its machine-side PID"},
			{Name: "mapper_vsz_mib", Doc: "its VSZ in MiB when up returned"},
			{Name: "mapper_rss_mib", Doc: "its RSS in MiB when up returned"},
			{Name: "holder", Doc: "the process really holding memory"},
			{Name: "holder_pid", Doc: "its machine-side PID"},
			{Name: "holder_rss_mib", Doc: "its RSS in MiB when up returned"},
		},
	}, vszRssKind{})
}

func (vszRssKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*VszRssParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	if limit, ok, err := memoryLimit(h.CgroupDir("memory")); err != nil {
		return nil, err
	} else if ok && int64(p.Resident)+32<<20 > limit {
		return nil, fmt.Errorf("resident %s does not fit host %s's memory limit %s with room for the Go runtime (32Mi)", p.Resident, f.Host, labs.Size(limit))
	}
	mapper := service{Name: p.Mapper, Config: "/etc/" + p.Mapper + ".conf",
		Content: fmt.Sprintf("# %s: search index, mapped at start\nreserve = %s\n", p.Mapper, p.Reserve)}
	holder := service{Name: p.Holder, Config: "/etc/" + p.Holder + ".conf",
		Content: fmt.Sprintf("# %s: keeps user sessions in memory\nbuffer = %s\n", p.Holder, p.Resident)}
	mpid, err := mapper.start(ctx, h)
	if err != nil {
		return nil, err
	}
	hpid, err := holder.start(ctx, h)
	if err != nil {
		return nil, err
	}
	// Observable: the mapping is in VSZ and the holder's memory in RSS.
	var mvsz, mrss, hrss int64
	err = pollUntil(ctx, 30*time.Second, func() (bool, string, error) {
		var err error
		if mvsz, err = procStatus(mpid, "VmSize"); err != nil {
			return false, "", err
		}
		if mrss, err = procStatus(mpid, "VmRSS"); err != nil {
			return false, "", err
		}
		if hrss, err = procStatus(hpid, "VmRSS"); err != nil {
			return false, "", err
		}
		return mvsz >= int64(p.Reserve) && hrss >= int64(p.Resident),
			fmt.Sprintf("%s VSZ %s MiB, %s RSS %s MiB", p.Mapper, mib(mvsz), p.Holder, mib(hrss)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("memory.vsz-rss on %s: %w", f.Host, err)
	}
	return &faults.Applied{Facts: map[string]string{
		"mapper":         p.Mapper,
		"mapper_pid":     strconv.Itoa(mpid),
		"mapper_vsz_mib": mib(mvsz),
		"mapper_rss_mib": mib(mrss),
		"holder":         p.Holder,
		"holder_pid":     strconv.Itoa(hpid),
		"holder_rss_mib": mib(hrss),
	}}, nil
}

// Revert has nothing to undo: both services live and die with the host.
func (vszRssKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return nil
}
