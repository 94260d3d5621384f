package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/labctl/labctl/checks"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/labs"
)

// Self-test: a lab proves that its fault is really there (its state checks
// fail and no question passes unanswered), that each wrong fix leaves a
// check failing, that the reference solution makes every check pass, and
// that down leaves nothing of the instance behind.

// Phases of a self-test, in order.
const (
	PhaseUp       = "up"
	PhaseBroken   = "broken"
	PhaseWrongFix = "wrong-fix"
	PhaseSolve    = "solve"
	PhaseDown     = "down"
)

// PhaseResult is the outcome of one phase.
type PhaseResult struct {
	Phase    string        `json:"phase"`
	Name     string        `json:"name,omitempty"` // the wrong fix's name
	Pass     bool          `json:"pass"`
	Message  string        `json:"message,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// LabResult is one lab's self-test.
type LabResult struct {
	Lab      string        `json:"lab"`
	File     string        `json:"file"`
	Run      int           `json:"run"` // 1-based repetition
	Pass     bool          `json:"pass"`
	Phases   []PhaseResult `json:"phases"`
	Duration time.Duration `json:"duration_ns"`
	Kept     string        `json:"kept,omitempty"` // instance left running (--keep-on-failure)
}

// Failed returns the first failing phase, or nil.
func (r *LabResult) Failed() *PhaseResult {
	for i := range r.Phases {
		if !r.Phases[i].Pass {
			return &r.Phases[i]
		}
	}
	return nil
}

// TestOptions tune a self-test.
type TestOptions struct {
	Run           int
	KeepOnFailure bool
	// Phase is called as each phase ends (for a line per lab and phase).
	Phase func(lab string, run int, p PhaseResult)
}

// SelfTest runs one lab through every phase.
func SelfTest(ctx context.Context, lab *labs.Lab, opt TestOptions) *LabResult {
	st := &selfTest{ctx: ctx, lab: lab, opt: opt, res: &LabResult{Lab: lab.Name, File: lab.File, Run: opt.Run}}
	start := time.Now()
	st.run()
	st.res.Duration = time.Since(start)
	st.res.Pass = st.res.Failed() == nil
	return st.res
}

type selfTest struct {
	ctx context.Context
	lab *labs.Lab
	opt TestOptions
	res *LabResult
}

func (st *selfTest) record(p PhaseResult) bool {
	st.res.Phases = append(st.res.Phases, p)
	if st.opt.Phase != nil {
		st.opt.Phase(st.lab.Name, st.opt.Run, p)
	}
	return p.Pass
}

func (st *selfTest) phase(name, sub string, fn func() error) bool {
	start := time.Now()
	err := fn()
	p := PhaseResult{Phase: name, Name: sub, Pass: err == nil, Duration: time.Since(start)}
	if err != nil {
		p.Message = err.Error()
	}
	return st.record(p)
}

func (st *selfTest) up() (*Instance, error) {
	in, err := Up(st.ctx, st.lab, UpOptions{Name: fmt.Sprintf("test-%s-%s", st.lab.Name, newID())})
	if err != nil {
		return nil, err
	}
	in.MarkUp()
	return in, nil
}

// down removes an instance and proves none of its resources is left.
func (st *selfTest) down(in *Instance, failed bool) error {
	if failed && st.opt.KeepOnFailure {
		st.res.Kept = in.Name
		return nil
	}
	if err := in.Down(context.WithoutCancel(st.ctx)); err != nil {
		return err
	}
	return residueOf(in.ID)
}

func (st *selfTest) run() {
	var in *Instance
	if !st.phase(PhaseUp, "", func() (err error) { in, err = st.up(); return err }) {
		return
	}
	broken := st.phase(PhaseBroken, "", func() error { return st.broken(in) })
	if !broken {
		st.phase(PhaseDown, "", func() error { return st.down(in, true) })
		return
	}
	for _, wf := range st.lab.WrongFixes {
		st.phase(PhaseWrongFix, wf.Name, func() error { return st.wrongFix(wf) })
	}
	solved := st.phase(PhaseSolve, "", func() error { return st.solve(in) })
	st.phase(PhaseDown, "", func() error { return st.down(in, !solved) })
}

// broken: with the fault present every state check the fault breaks
// fails, and no question passes without an answer.
func (st *selfTest) broken(in *Instance) error {
	outcomes := checks.Run(st.ctx, st.lab, in, nil, nil, checks.RunOptions{})
	var problems []string
	for _, o := range outcomes {
		c := st.lab.CheckByID(o.ID)
		if o.Status == checks.StatusPass && (c.IsAnswer() || c.Broken == nil || *c.Broken) {
			problems = append(problems, fmt.Sprintf("check %s passes although the fault is present (%s)", o.ID, describe(o)))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// wrongFix: on a fresh instance, with the right answers given, the wrong
// fix leaves at least one check (or every listed one) failing.
func (st *selfTest) wrongFix(wf labs.WrongFix) (err error) {
	in, err := st.up()
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	defer func() {
		if derr := st.down(in, err != nil); derr != nil && err == nil {
			err = fmt.Errorf("down: %w", derr)
		}
	}()
	if err := in.recordSolutionAnswers(); err != nil {
		return err
	}
	if err := in.RunSteps(st.ctx, wf.Run, io.Discard); err != nil {
		return fmt.Errorf("the wrong fix does not run: %w", err)
	}
	// As after a learner's check: "since check" counters count from here.
	in.markCounters(checks.SinceCheck)
	outcomes := checks.Run(st.ctx, st.lab, in, answersOf(in), nil, checks.RunOptions{})
	status := map[string]checks.Outcome{}
	failing := 0
	for _, o := range outcomes {
		status[o.ID] = o
		if o.Status != checks.StatusPass {
			failing++
		}
	}
	for _, id := range wf.Fails {
		if o := status[id]; o.Status == checks.StatusPass {
			return fmt.Errorf("check %s passes after the wrong fix %q (%s)", id, wf.Name, describe(o))
		}
	}
	if failing == 0 {
		return fmt.Errorf("every check passes after the wrong fix %q", wf.Name)
	}
	return nil
}

// solve: the reference solution makes every check pass.
func (st *selfTest) solve(in *Instance) error {
	if st.lab.Solution == nil {
		return errors.New("the lab has no solution")
	}
	if err := in.Solve(st.ctx, io.Discard); err != nil {
		return err
	}
	in.markCounters(checks.SinceCheck)
	outcomes := checks.Run(st.ctx, st.lab, in, answersOf(in), nil, checks.RunOptions{})
	var problems []string
	for _, o := range outcomes {
		if o.Status != checks.StatusPass {
			problems = append(problems, fmt.Sprintf("check %s is %s after the solution (%s)", o.ID, o.Status, describe(o)))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func answersOf(in *Instance) map[string]string {
	a, err := in.Answers()
	if err != nil {
		return nil
	}
	return answerValues(a)
}

func describe(o checks.Outcome) string {
	parts := []string{}
	if o.Seen != "" {
		parts = append(parts, "seen: "+o.Seen)
	}
	if o.Wanted != "" {
		parts = append(parts, "wanted: "+o.Wanted)
	}
	if o.Message != "" {
		parts = append(parts, o.Message)
	}
	if len(parts) == 0 {
		return o.Status
	}
	return strings.Join(parts, "; ")
}

// residueOf lists what is left on the machine that carries an instance's
// id (netns, cgroup directories, mounts, processes, its state directory).
// The kernel finishes some cleanup just after down returns (a killed
// init is reaped by the machine's init), so it waits for the condition
// with a deadline.
func residueOf(id string) error {
	var left []string
	for deadline := time.Now().Add(residueDeadline); ; {
		snap, err := hostsnap.Take()
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		left = snap.Mentioning(id)
		if _, err := os.Stat(filepath.Join(StateRoot(), id)); err == nil {
			left = append(left, "state directory "+filepath.Join(StateRoot(), id))
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(residuePoll)
	}
	if len(left) > 0 {
		return fmt.Errorf("residue after down: %s", strings.Join(left, "; "))
	}
	return nil
}

// How long residue checks wait for the machine to finish cleaning up.
const (
	residueDeadline = 15 * time.Second
	residuePoll     = 50 * time.Millisecond
)

// SettledDiff compares the machine with a snapshot taken before, waiting
// (with a deadline) for cleanup the kernel finishes after down returns.
func SettledDiff(before *hostsnap.Snapshot) (string, error) {
	for deadline := time.Now().Add(residueDeadline); ; {
		after, err := hostsnap.Take()
		if err != nil {
			return "", err
		}
		diff := hostsnap.Diff(before, after)
		if diff == "" || time.Now().After(deadline) {
			return diff, nil
		}
		time.Sleep(residuePoll)
	}
}
