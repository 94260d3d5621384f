package labs_test

import (
	"errors"

	"github.com/labctl/labctl/labs"
)

// Test-only kinds, registered under names no real driver uses, so the
// corpus does not depend on the fault and probe packages being written
// in parallel. They exercise every params feature: required fields,
// Size/Duration/Mode, templates, slices, nested structs, defaults and a
// Validate method.

type testFaultParams struct {
	Process  string            `yaml:"process" doc:"service name" required:"true" template:"true"`
	Allocate labs.Size         `yaml:"allocate,omitempty" doc:"how much to allocate"`
	Restart  labs.Duration     `yaml:"restart,omitempty" doc:"restart delay"`
	Mode     *labs.Mode        `yaml:"mode,omitempty" doc:"mode of its file"`
	Args     []string          `yaml:"args,omitempty" doc:"extra argv" template:"true"`
	Env      map[string]string `yaml:"env,omitempty" doc:"environment" template:"true"`
	Limits   *testLimits       `yaml:"limits,omitempty" doc:"nested limits"`
}

type testLimits struct {
	Files int    `yaml:"files" doc:"open files" required:"true"`
	Note  string `yaml:"note,omitempty" doc:"a note" template:"true"`
}

func (p *testFaultParams) Validate() error {
	if p.Allocate == 0 {
		return &labs.ParamError{Field: "allocate", Msg: "must be greater than 0"}
	}
	if p.Restart > labs.Duration(3600e9) {
		return errors.New("restart delay longer than an hour makes the lab unobservable")
	}
	return nil
}

type testCmdParams struct {
	Argv    []string      `yaml:"argv" doc:"command" required:"true" template:"true"`
	Exit    *int          `yaml:"exit,omitempty" doc:"expected exit status (default 0)"`
	Stdout  string        `yaml:"stdout,omitempty" doc:"RE2 regex" template:"true"`
	Timeout labs.Duration `yaml:"timeout,omitempty" doc:"timeout (default 10s)"`
}

type testClockParams struct {
	After labs.Duration `yaml:"after" doc:"passes this long after up" required:"true"`
}

func init() {
	labs.RegisterFault(labs.FaultKind{
		Name: "test.fault",
		Doc:  "test-only fault with typed params",
		NewParams: func() any {
			return &testFaultParams{Allocate: 64 << 20}
		},
		Facts: []labs.FactSpec{{Name: "victim", Doc: "killed process"}, {Name: "pid", Doc: "its PID"}},
		Inits: []labs.InitKind{labs.InitMini},
	})
	labs.RegisterFault(labs.FaultKind{
		Name:  "test.net",
		Doc:   "test-only fault without params",
		Facts: []labs.FactSpec{{Name: "addr", Doc: "an address"}},
	})
	labs.RegisterProbe(labs.ProbeKind{
		Name:      "test.cmd",
		Doc:       "test-only command probe",
		NewParams: func() any { return &testCmdParams{Timeout: labs.Duration(10e9)} },
	})
	labs.RegisterProbe(labs.ProbeKind{
		Name:      "test.clock",
		Doc:       "test-only probe that needs no host",
		NewParams: func() any { return &testClockParams{} },
		NoHost:    true,
	})
}
