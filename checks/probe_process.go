package checks

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/labctl/labctl/labs"
)

// ProcessParams selects processes of a host and states what must hold for
// them. With no selector, every process of the host is selected.
type ProcessParams struct {
	PID     string `yaml:"pid,omitempty" json:"pid,omitempty" doc:"select the process with this machine-side PID (usually a fact template)" template:"true"`
	Comm    string `yaml:"comm,omitempty" json:"comm,omitempty" doc:"select processes with this command name (as ps -o comm shows it)" template:"true"`
	Cmdline string `yaml:"cmdline,omitempty" json:"cmdline,omitempty" doc:"select processes whose command line contains a match of this RE2 expression" template:"true"`

	Present  *bool    `yaml:"present,omitempty" json:"present,omitempty" doc:"at least one process is selected (default true); false: none is"`
	StateNot []string `yaml:"state_not,omitempty" json:"state_not,omitempty" doc:"no selected process is in one of these ps states, e.g. [D, Z]"`
	MaxFDs   *int     `yaml:"max_fds,omitempty" json:"max_fds,omitempty" doc:"no selected process has more open file descriptors than this"`
	Count    *int     `yaml:"count,omitempty" json:"count,omitempty" doc:"exactly this many processes are selected"`
}

// Validate checks what can be checked before facts are known.
func (p *ProcessParams) Validate() error {
	if p.Cmdline != "" && !strings.Contains(p.Cmdline, "{{") {
		if _, err := regexp.Compile(p.Cmdline); err != nil {
			return &labs.ParamError{Field: "cmdline", Msg: "invalid regular expression: " + err.Error()}
		}
	}
	for _, s := range p.StateNot {
		if len(s) != 1 || !strings.Contains("RSDZTtXI", s) {
			return &labs.ParamError{Field: "state_not", Msg: fmt.Sprintf("%q is not a ps state letter (R, S, D, Z, T, t, X, I)", s)}
		}
	}
	if p.MaxFDs != nil && *p.MaxFDs < 0 {
		return &labs.ParamError{Field: "max_fds", Msg: "must not be negative"}
	}
	if p.Count != nil && *p.Count < 0 {
		return &labs.ParamError{Field: "count", Msg: "must not be negative"}
	}
	if p.Present != nil && !*p.Present && (len(p.StateNot) > 0 || p.MaxFDs != nil || (p.Count != nil && *p.Count > 0)) {
		return &labs.ParamError{Field: "present", Msg: "present: false cannot be combined with state_not, max_fds or a positive count"}
	}
	return nil
}

type processProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "process",
		Doc:  "selects processes of the host by pid, comm or cmdline and checks presence, count, state and open fds",
		NewParams: func() any {
			present := true
			return &ProcessParams{Present: &present}
		},
	}, processProber{})
}

func (processProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*ProcessParams)
	var cmdlineRE *regexp.Regexp
	if p.Cmdline != "" {
		var err error
		if cmdlineRE, err = regexp.Compile(p.Cmdline); err != nil {
			return errorResult(fmt.Errorf("cmdline: invalid regular expression: %w", err))
		}
	}
	wantPID := 0
	if p.PID != "" {
		var err error
		if wantPID, err = parsePIDValue("pid", p.PID); err != nil {
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
	var sel []proc
	for _, pr := range all {
		if (wantPID == 0 || pr.PID == wantPID) &&
			(p.Comm == "" || pr.Comm == commOf(p.Comm)) &&
			(cmdlineRE == nil || cmdlineRE.MatchString(pr.Cmdline)) {
			sel = append(sel, pr)
		}
	}
	what := describeSelector(p)
	present := p.Present == nil || *p.Present
	res := Result{Wanted: describeProcessWant(p, what, present)}
	res.Seen = describeSelection(sel)

	if !present {
		if len(sel) > 0 {
			res.Message = fmt.Sprintf("%s is still running", what)
			return res
		}
		res.Pass, res.Message = true, fmt.Sprintf("%s is gone", what)
		return res
	}
	if p.Count != nil && len(sel) != *p.Count {
		res.Message = fmt.Sprintf("%d processes match %s", len(sel), what)
		return res
	}
	if len(sel) == 0 && (p.Count == nil || *p.Count > 0) {
		res.Message = fmt.Sprintf("no process matches %s", what)
		return res
	}
	for _, pr := range sel {
		if slices.Contains(p.StateNot, pr.State) {
			res.Message = fmt.Sprintf("process %d (%s) is in state %s", pr.PID, pr.Comm, stateName(pr.State))
			return res
		}
		if p.MaxFDs != nil {
			n, err := fdCount(pr.PID)
			if err != nil {
				// It exited between the listing and now: it holds no fds.
				continue
			}
			if n > *p.MaxFDs {
				res.Seen += fmt.Sprintf("; process %d has %d open fds", pr.PID, n)
				res.Message = fmt.Sprintf("process %d (%s) has %d open file descriptors", pr.PID, pr.Comm, n)
				return res
			}
		}
	}
	res.Pass, res.Message = true, fmt.Sprintf("%s is as expected", what)
	return res
}

// commOf is name as the kernel stores it in comm: at most 15 bytes
// (TASK_COMM_LEN 16 with the NUL), so "labctl-supervisor" is found as
// "labctl-supervis", as ps shows it.
func commOf(name string) string {
	const taskCommLen = 16
	if len(name) >= taskCommLen {
		return name[:taskCommLen-1]
	}
	return name
}

func describeSelector(p *ProcessParams) string {
	var parts []string
	if p.PID != "" {
		parts = append(parts, "pid "+p.PID)
	}
	if p.Comm != "" {
		parts = append(parts, "comm "+p.Comm)
	}
	if p.Cmdline != "" {
		parts = append(parts, "cmdline ~ "+p.Cmdline)
	}
	if len(parts) == 0 {
		return "any process"
	}
	return "the process with " + strings.Join(parts, ", ")
}

func describeProcessWant(p *ProcessParams, what string, present bool) string {
	if !present {
		return "no " + strings.TrimPrefix(what, "the ")
	}
	var parts []string
	if p.Count != nil {
		parts = append(parts, strconv.Itoa(*p.Count)+" of "+what)
	} else {
		parts = append(parts, what+" running")
	}
	if len(p.StateNot) > 0 {
		parts = append(parts, "not in state "+strings.Join(p.StateNot, "/"))
	}
	if p.MaxFDs != nil {
		parts = append(parts, fmt.Sprintf("at most %d open fds", *p.MaxFDs))
	}
	return strings.Join(parts, ", ")
}

// describeSelection lists up to a few selected processes as ps would.
func describeSelection(sel []proc) string {
	if len(sel) == 0 {
		return "no matching process"
	}
	const shown = 5
	var parts []string
	for i, pr := range sel {
		if i == shown {
			parts = append(parts, fmt.Sprintf("… %d more", len(sel)-shown))
			break
		}
		parts = append(parts, fmt.Sprintf("%d %s %s", pr.PID, pr.Comm, pr.State))
	}
	return fmt.Sprintf("%d matching: %s", len(sel), strings.Join(parts, ", "))
}
