package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// StickyParams are the `with:` of fs.sticky.
type StickyParams struct {
	Dir      string `yaml:"dir,omitempty" json:"dir,omitempty" doc:"the shared, world-writable directory (default /srv/shared); must be on a lab-local filesystem (a mount of the host, or /tmp), so the machine never holds it"`
	Owner    string `yaml:"owner" json:"owner" doc:"the lab user whose report gets deleted" required:"true"`
	Other    string `yaml:"other" json:"other" doc:"the lab user whose cleanup job deletes it" required:"true"`
	Reporter string `yaml:"reporter,omitempty" json:"reporter,omitempty" doc:"the owner's service as ps shows it (default reporter)"`
	Cleaner  string `yaml:"cleaner,omitempty" json:"cleaner,omitempty" doc:"the other user's cleanup job as ps shows it (default sweeper)"`
}

// Validate checks the params before anything is created.
func (p *StickyParams) Validate() error {
	switch {
	case !validPath(p.Dir):
		return &labs.ParamError{Field: "dir", Msg: "want an absolute, clean path"}
	case !accountRe.MatchString(p.Owner):
		return &labs.ParamError{Field: "owner", Msg: "want a lab user's name"}
	case !accountRe.MatchString(p.Other) || p.Other == p.Owner:
		return &labs.ParamError{Field: "other", Msg: "want another lab user's name"}
	case !commRe.MatchString(p.Reporter):
		return &labs.ParamError{Field: "reporter", Msg: "want 1-15 letters, digits, '.', '_' or '-' (a process name)"}
	case !commRe.MatchString(p.Cleaner) || p.Cleaner == p.Reporter:
		return &labs.ParamError{Field: "cleaner", Msg: "want 1-15 letters, digits, '.', '_' or '-', not the reporter's name"}
	}
	return nil
}

// ValidateHost checks what Validate cannot see: the shared directory is
// on a filesystem the host declares (or below its own /tmp).
func (p *StickyParams) ValidateHost(h *labs.Host) error {
	if !onDeclaredMount(h, p.Dir) {
		return &labs.ParamError{Field: "dir", Msg: notDeclaredMsg(h, p.Dir, p.Dir)}
	}
	return nil
}

type stickyKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "fs.sticky",
		Doc:  "a shared world-writable directory without the sticky bit: one lab user's cleanup job deletes another user's files",
		NewParams: func() any {
			return &StickyParams{Dir: "/srv/shared", Reporter: "reporter", Cleaner: "sweeper"}
		},
		Facts: []labs.FactSpec{
			{Name: "dir", Doc: "the shared directory"},
			{Name: "report", Doc: "the owner's file that keeps vanishing"},
			{Name: "owner", Doc: "the user whose file is deleted"},
			{Name: "other", Doc: "the user whose job deletes it"},
			{Name: "reporter", Doc: "the owner's service"},
			{Name: "cleaner", Doc: "the other user's cleanup job"},
			{Name: "cleaner_pid", Doc: "the cleanup job's machine-side PID"},
			{Name: "cleaner_ns_pid", Doc: "its PID inside the host"},
			{Name: "reporter_log", Doc: "the reporter's log"},
			{Name: "cleaner_log", Doc: "the cleanup job's log"},
		},
	}, stickyKind{})
}

func (stickyKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*StickyParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	report := filepath.Join(p.Dir, p.Owner+"-report.txt")
	repLog, cleanLog := "/var/log/"+p.Reporter+".log", "/var/log/"+p.Cleaner+".log"
	// Checked before anything is made: a world-writable directory on an
	// overlay would sit in the machine's filesystem (the upper layer).
	m, err := requireLabLocal(h, p.Dir)
	if err != nil {
		return nil, fmt.Errorf("dir: %w", err)
	}
	if err := run(ctx, h, "mkdir", "-p", p.Dir); err != nil {
		return nil, err
	}
	if m2, err := requireLabLocal(h, p.Dir); err != nil || m2.Point != m.Point {
		return nil, fmt.Errorf("dir: %s moved to another filesystem while being created", p.Dir)
	}
	for _, s := range [][]string{
		{"chown", "root:root", p.Dir},
		{"chmod", "0777", p.Dir}, // world-writable, the sticky bit forgotten
	} {
		if err := run(ctx, h, s...); err != nil {
			return nil, err
		}
	}
	var s serviceState
	applied := &faults.Applied{}
	start := func(spec faults.ServiceSpec) (int, error) {
		pid, err := startService(ctx, h, spec)
		s.PIDs, s.Names = append(s.PIDs, pid), append(s.Names, spec.Comm)
		applied.State, _ = json.Marshal(s)
		return pid, err
	}
	if _, err := start(faults.ServiceSpec{
		Helper: serviceHelper, Comm: p.Reporter, Args: []string{"--out", report},
		Params: serviceParams{Role: roleReporter, Name: p.Reporter, User: p.Owner, Log: repLog, File: report},
	}); err != nil {
		return applied, err
	}
	cpid, err := start(faults.ServiceSpec{
		Helper: serviceHelper, Comm: p.Cleaner, Args: []string{"--sweep", p.Dir},
		Params: serviceParams{Role: roleCleaner, Name: p.Cleaner, User: p.Other, Log: cleanLog, Dir: p.Dir},
	})
	if err != nil {
		return applied, err
	}
	// Observable: the other user's job has deleted the owner's file, and
	// the owner's service noticed.
	if err := poll(ctx, p.Cleaner+" to delete "+report, func() (bool, error) {
		return strings.Contains(readInHost(h, cleanLog), "removed "+report) &&
			strings.Contains(readInHost(h, repLog), "is missing"), nil
	}); err != nil {
		return applied, err
	}
	ns, err := nsPID(cpid)
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"dir": p.Dir, "report": report, "owner": p.Owner, "other": p.Other, "reporter": p.Reporter, "cleaner": p.Cleaner,
		"cleaner_pid": strconv.Itoa(cpid), "cleaner_ns_pid": strconv.Itoa(ns), "reporter_log": repLog, "cleaner_log": cleanLog,
	}
	return applied, nil
}

func (stickyKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	stopAll(state)
	return nil
}
