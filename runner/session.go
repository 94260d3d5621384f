package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/checks"
	"github.com/labctl/labctl/labs"
)

// The learner's side of an instance: answers, checks, hints, the reference
// solution and the trainer's report. Everything a learner does is an event
// in events.jsonl; answers and attempts are read back from there, so the
// report and the grading see one history.

// Event kinds written by the session.
const (
	EventAnswer = "answer"
	EventCheck  = "check"
	EventHint   = "hint"
	EventSolve  = "solve"
)

// Answer is one recorded answer.
type Answer struct {
	Check string    `json:"check"`
	Value string    `json:"value"`
	Time  time.Time `json:"time"`
	By    string    `json:"by,omitempty"` // "solve" when the reference solution gave it
}

// ErrUnknownCheck is returned for a check id the lab does not have.
var ErrUnknownCheck = errors.New("unknown check")

// Answer records the learner's answer to a diagnosis check.
func (in *Instance) Answer(check, value string) error {
	return in.answer(check, value, "")
}

func (in *Instance) answer(check, value, by string) error {
	c := in.Lab.CheckByID(check)
	if c == nil {
		return fmt.Errorf("%w %q; questions: %s", ErrUnknownCheck, check, strings.Join(in.Questions(), ", "))
	}
	if !c.IsAnswer() {
		return fmt.Errorf("check %q is graded from the lab's state, not answered (labctl check %s)", check, check)
	}
	data := map[string]any{"check": check, "value": value}
	if by != "" {
		data["by"] = by
	}
	return in.RecordEvent(EventAnswer, data)
}

// Questions lists the ids of the lab's diagnosis checks.
func (in *Instance) Questions() []string {
	var out []string
	for _, c := range in.Lab.Checks {
		if c.IsAnswer() {
			out = append(out, c.ID)
		}
	}
	return out
}

// Answers returns the latest answer per check.
func (in *Instance) Answers() (map[string]Answer, error) {
	events, err := in.Events()
	if err != nil {
		return nil, err
	}
	out := map[string]Answer{}
	for _, e := range events {
		if e.Kind != EventAnswer {
			continue
		}
		check, _ := e.Data["check"].(string)
		value, _ := e.Data["value"].(string)
		by, _ := e.Data["by"].(string)
		out[check] = Answer{Check: check, Value: value, Time: e.Time, By: by}
	}
	return out, nil
}

func answerValues(answers map[string]Answer) map[string]string {
	out := make(map[string]string, len(answers))
	for k, a := range answers {
		out[k] = a.Value
	}
	return out
}

// Check grades the lab (only the given checks, or all) and records the
// attempt.
func (in *Instance) Check(ctx context.Context, only []string) ([]checks.Outcome, error) {
	for _, id := range only {
		if in.Lab.CheckByID(id) == nil {
			return nil, fmt.Errorf("%w %q", ErrUnknownCheck, id)
		}
	}
	outcomes, err := in.evaluate(ctx, only)
	if err != nil {
		return nil, err
	}
	results := map[string]any{}
	for _, o := range outcomes {
		results[o.ID] = o.Status
	}
	if err := in.RecordEvent(EventCheck, map[string]any{"results": results}); err != nil {
		return nil, err
	}
	in.markCounters(checks.SinceCheck)
	return outcomes, nil
}

// evaluate runs checks without recording an attempt (hint gates use it).
func (in *Instance) evaluate(ctx context.Context, only []string) ([]checks.Outcome, error) {
	answers, err := in.Answers()
	if err != nil {
		return nil, err
	}
	return checks.Run(ctx, in.Lab, in, answerValues(answers), only, checks.RunOptions{}), nil
}

// markCounters remembers the cgroup counters "since" probes compare with:
// at up, and after every graded attempt.
func (in *Instance) markCounters(when string) {
	for _, c := range in.Lab.Checks {
		if c.Probe == nil || c.Probe.Kind != "cgroup" {
			continue
		}
		p, ok := c.Probe.Params.(*checks.CgroupParams)
		if !ok || p.Counter == "" {
			continue
		}
		host := c.Probe.Host
		if host == "" && len(in.Hosts) > 0 {
			host = in.Hosts[0].Name
		}
		dir, err := in.CgroupDir(host, p.Controller)
		if err != nil {
			continue
		}
		v, err := checks.Counter(dir, p.Controller, p.Counter)
		if err != nil {
			continue // a missing mark makes the probe count from zero
		}
		_ = in.SetMark(checks.MarkKey(host, p.Controller, p.Counter, when), strconv.FormatInt(v, 10))
	}
}

// MarkUp records the counters at up; the CLI calls it once the lab is ready.
func (in *Instance) MarkUp() { in.markCounters(checks.SinceUp) }

// ShownHint is a hint given to the learner.
type ShownHint struct {
	Index int    // position in the lab's hint list
	Text  string // rendered
	Left  int    // hints not shown yet
}

// NoHintError says that no hint is available now, and when the next
// time-gated one opens (zero if none will open by waiting).
type NoHintError struct {
	NextIn time.Duration
	Shown  int
}

func (e *NoHintError) Error() string {
	switch {
	case e.NextIn > 0:
		return fmt.Sprintf("no new hint yet; the next one opens in %s", e.NextIn.Round(time.Second))
	case e.Shown > 0:
		return "no more hints for where you are; the checks that still fail say what is left"
	}
	return "this lab has no hints"
}

// Hint returns the next hint whose gate is open (elapsed time and/or a
// named check failing) and records that it was shown.
func (in *Instance) Hint(ctx context.Context) (*ShownHint, error) {
	shown, err := in.shownHints()
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(in.Created)
	var nextIn time.Duration
	for i, h := range in.Lab.Hints {
		if shown[i] {
			continue
		}
		if h.After != nil && elapsed < h.After.D() {
			if wait := h.After.D() - elapsed; nextIn == 0 || wait < nextIn {
				nextIn = wait
			}
			continue
		}
		if len(h.WhenFailing) > 0 {
			failing, err := in.anyFailing(ctx, h.WhenFailing)
			if err != nil {
				return nil, err
			}
			if !failing {
				continue
			}
		}
		text, err := labs.Render(h.Text, in.Facts())
		if err != nil {
			return nil, fmt.Errorf("hint %d: %w", i+1, err)
		}
		if err := in.RecordEvent(EventHint, map[string]any{"index": i}); err != nil {
			return nil, err
		}
		return &ShownHint{Index: i, Text: text, Left: len(in.Lab.Hints) - len(shown) - 1}, nil
	}
	return nil, &NoHintError{NextIn: nextIn, Shown: len(shown)}
}

func (in *Instance) shownHints() (map[int]bool, error) {
	events, err := in.Events()
	if err != nil {
		return nil, err
	}
	shown := map[int]bool{}
	for _, e := range events {
		if e.Kind == EventHint {
			if i, ok := e.Data["index"].(float64); ok {
				shown[int(i)] = true
			}
		}
	}
	return shown, nil
}

func (in *Instance) anyFailing(ctx context.Context, ids []string) (bool, error) {
	outcomes, err := in.evaluate(ctx, ids)
	if err != nil {
		return false, err
	}
	for _, o := range outcomes {
		if o.Status != checks.StatusPass {
			return true, nil
		}
	}
	return false, nil
}

// Solve applies the reference solution: records its answers, then runs
// its commands inside the hosts. Output of the commands goes to out.
func (in *Instance) Solve(ctx context.Context, out io.Writer) error {
	sol := in.Lab.Solution
	if sol == nil {
		return errors.New("this lab has no reference solution")
	}
	if err := in.RecordEvent(EventSolve, nil); err != nil {
		return err
	}
	if err := in.recordSolutionAnswers(); err != nil {
		return err
	}
	return in.RunSteps(ctx, sol.Run, out)
}

func (in *Instance) recordSolutionAnswers() error {
	if in.Lab.Solution == nil {
		return nil
	}
	ids := make([]string, 0, len(in.Lab.Solution.Answers))
	for id := range in.Lab.Solution.Answers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	facts := in.Facts()
	for _, id := range ids {
		v, err := labs.Render(in.Lab.Solution.Answers[id], facts)
		if err != nil {
			return fmt.Errorf("solution answer %s: %w", id, err)
		}
		if err := in.answer(id, v, "solve"); err != nil {
			return err
		}
	}
	return nil
}

// StepError is a lab step (solution or wrong fix) that did not run cleanly.
type StepError struct {
	Step   int
	Host   string
	Output string
	Err    error
}

func (e *StepError) Error() string {
	msg := fmt.Sprintf("step %d on %s: %v", e.Step+1, e.Host, e.Err)
	if out := strings.TrimSpace(e.Output); out != "" {
		msg += "\n" + indent(lastLines(out, 10), "    ")
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }

// RunSteps runs lab steps (rendered over the facts) inside their hosts, in
// order, stopping at the first that fails.
func (in *Instance) RunSteps(ctx context.Context, steps []labs.Step, out io.Writer) error {
	facts := in.Facts()
	for i, st := range steps {
		argv, err := stepArgv(st, facts)
		if err != nil {
			return &StepError{Step: i, Host: st.Host, Err: err}
		}
		timeout := 30 * time.Second
		if st.Timeout != nil {
			timeout = st.Timeout.D()
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		cmd, err := in.Command(sctx, st.Host, argv...)
		if err != nil {
			cancel()
			return &StepError{Step: i, Host: st.Host, Err: err}
		}
		var buf strings.Builder
		cmd.Stdout = multi(&buf, out)
		cmd.Stderr = multi(&buf, out)
		err = cmd.Run()
		timedOut := sctx.Err() != nil
		cancel()
		if err != nil {
			if timedOut {
				err = fmt.Errorf("did not finish within %s", timeout)
			}
			return &StepError{Step: i, Host: hostLabel(st.Host, in), Output: buf.String(), Err: err}
		}
	}
	return nil
}

func hostLabel(h string, in *Instance) string {
	if h == "" && len(in.Hosts) > 0 {
		return in.Hosts[0].Name
	}
	return h
}

func stepArgv(st labs.Step, facts map[string]string) ([]string, error) {
	if st.Sh != "" {
		script, err := labs.Render(st.Sh, facts)
		if err != nil {
			return nil, err
		}
		return []string{"/bin/sh", "-c", script}, nil
	}
	argv := make([]string, len(st.Argv))
	for i, a := range st.Argv {
		v, err := labs.Render(a, facts)
		if err != nil {
			return nil, err
		}
		argv[i] = v
	}
	return argv, nil
}

func multi(a io.Writer, b io.Writer) io.Writer {
	if b == nil {
		return a
	}
	return io.MultiWriter(a, b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// Report is what a trainer or interviewer reads after a session.
type Report struct {
	Instance  string        `json:"instance"`
	Lab       string        `json:"lab"`
	Started   time.Time     `json:"started"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	Solved    bool          `json:"solved"`
	UsedSolve bool          `json:"used_solve"`
	Checks    []CheckReport `json:"checks"`
	Hints     []HintReport  `json:"hints"`
	Attempts  int           `json:"attempts"`
}

// CheckReport is one check's history.
type CheckReport struct {
	ID          string        `json:"id"`
	Kind        string        `json:"kind"` // answer | probe
	LastStatus  string        `json:"last_status"`
	Attempts    int           `json:"attempts"`
	FirstPassAt time.Duration `json:"first_pass_after_ns,omitempty"`
	Passed      bool          `json:"passed"`
	Answers     []Answer      `json:"answers,omitempty"`
}

// HintReport is one hint that was shown.
type HintReport struct {
	Index int           `json:"index"`
	After time.Duration `json:"after_ns"`
}

// Report summarises the session from its events.
func (in *Instance) Report() (*Report, error) {
	events, err := in.Events()
	if err != nil {
		return nil, err
	}
	r := &Report{Instance: in.Name, Lab: in.LabName, Started: in.Created, Elapsed: time.Since(in.Created)}
	byID := map[string]*CheckReport{}
	// Allocated once: byID points into it.
	r.Checks = make([]CheckReport, 0, len(in.Lab.Checks))
	for _, c := range in.Lab.Checks {
		kind := "probe"
		if c.IsAnswer() {
			kind = "answer"
		}
		cr := &CheckReport{ID: c.ID, Kind: kind, LastStatus: "not checked"}
		r.Checks = append(r.Checks, *cr)
		byID[c.ID] = &r.Checks[len(r.Checks)-1]
	}
	for _, e := range events {
		switch e.Kind {
		case EventAnswer:
			id, _ := e.Data["check"].(string)
			v, _ := e.Data["value"].(string)
			by, _ := e.Data["by"].(string)
			if cr := byID[id]; cr != nil {
				cr.Answers = append(cr.Answers, Answer{Check: id, Value: v, Time: e.Time, By: by})
			}
		case EventCheck:
			r.Attempts++
			results, _ := e.Data["results"].(map[string]any)
			for id, st := range results {
				cr := byID[id]
				if cr == nil {
					continue
				}
				status, _ := st.(string)
				cr.Attempts++
				cr.LastStatus = status
				if status == checks.StatusPass && !cr.Passed {
					cr.Passed = true
					cr.FirstPassAt = e.Time.Sub(in.Created)
				}
			}
		case EventHint:
			if i, ok := e.Data["index"].(float64); ok {
				r.Hints = append(r.Hints, HintReport{Index: int(i), After: e.Time.Sub(in.Created)})
			}
		case EventSolve:
			r.UsedSolve = true
		}
	}
	r.Solved = len(r.Checks) > 0
	for _, cr := range r.Checks {
		if cr.LastStatus != checks.StatusPass {
			r.Solved = false
		}
	}
	return r, nil
}
