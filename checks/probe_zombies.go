package checks

import (
	"context"
	"fmt"

	"github.com/labctl/labctl/labs"
)

// ZombiesParams bounds the number of zombie processes in a host.
type ZombiesParams struct {
	Max    int    `yaml:"max,omitempty" json:"max,omitempty" doc:"most zombies allowed (default 0)"`
	Parent string `yaml:"parent,omitempty" json:"parent,omitempty" doc:"count only children of this machine-side PID (usually a fact template)" template:"true"`
}

// Validate checks what can be checked before facts are known.
func (p *ZombiesParams) Validate() error {
	if p.Max < 0 {
		return &labs.ParamError{Field: "max", Msg: "must not be negative"}
	}
	return nil
}

type zombiesProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name:      "zombies",
		Doc:       "counts zombie (defunct) processes in the host, optionally only children of one parent",
		NewParams: func() any { return &ZombiesParams{} },
	}, zombiesProber{})
}

func (zombiesProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*ZombiesParams)
	parent := 0
	if p.Parent != "" {
		var err error
		if parent, err = parsePIDValue("parent", p.Parent); err != nil {
			return errorResult(err)
		}
	}
	initPID, err := t.InitPID(host)
	if err != nil {
		return errorResult(fmt.Errorf("host %s: %w", host, err))
	}
	all, err := hostProcs(initPID)
	if err != nil {
		return errorResult(err)
	}
	n := 0
	for _, pr := range all {
		if pr.State == "Z" && (parent == 0 || pr.PPID == parent) {
			n++
		}
	}
	scope := ""
	if parent != 0 {
		scope = fmt.Sprintf(" with parent %d", parent)
	}
	res := Result{
		Seen:   fmt.Sprintf("%d zombie processes%s", n, scope),
		Wanted: fmt.Sprintf("at most %d%s", p.Max, scope),
	}
	if n > p.Max {
		res.Message = fmt.Sprintf("%d zombie processes remain%s", n, scope)
		return res
	}
	res.Pass, res.Message = true, "no more zombies than allowed"
	return res
}
