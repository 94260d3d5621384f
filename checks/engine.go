package checks

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/labctl/labctl/labs"
)

// Outcome statuses.
const (
	StatusPass       = "pass"
	StatusFail       = "fail"
	StatusBlocked    = "blocked"    // a check it needs does not pass; not run
	StatusUnanswered = "unanswered" // a diagnosis check with no answer yet
)

// Outcome kinds.
const (
	KindAnswer = "answer"
	KindProbe  = "probe"
)

// Outcome is the graded state of one check.
type Outcome struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`   // KindAnswer or KindProbe
	Status string `json:"status"` // one of the Status constants
	Result
	Elapsed time.Duration `json:"elapsed"`
}

// Passed reports whether the check passes; blocked and unanswered do not.
func (o Outcome) Passed() bool { return o.Status == StatusPass }

// RunOptions tune Run.
type RunOptions struct {
	// Sequential runs one check at a time, in dependency order. Otherwise
	// independent probes run concurrently (a probe may take seconds: a
	// dial timeout, a stable_for window).
	Sequential bool
	// Parallel bounds concurrent probes (default 8).
	Parallel int
	// Now is the clock Elapsed is measured with (default time.Now).
	// stable_for windows always use the real clock: they wait for real.
	Now func() time.Time
}

// Run grades checks of lab against the running instance t, answers being
// the learner's recorded answers by check id. With only non-empty it
// grades just those checks (and, to decide whether they are blocked, what
// they need). Outcomes come back in lab order.
func Run(ctx context.Context, lab *labs.Lab, t Target, answers map[string]string, only []string, opt RunOptions) []Outcome {
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	facts := t.Facts()

	index := make(map[string]int, len(lab.Checks))
	for i := range lab.Checks {
		index[lab.Checks[i].ID] = i
	}

	// What to report, and everything it needs transitively.
	var report []string
	var unknown []string
	if len(only) == 0 {
		for i := range lab.Checks {
			report = append(report, lab.Checks[i].ID)
		}
	} else {
		for _, id := range only {
			if _, ok := index[id]; ok {
				report = append(report, id)
			} else {
				unknown = append(unknown, id)
			}
		}
	}
	needed := map[string]bool{}
	var visit func(id string)
	visit = func(id string) {
		i, ok := index[id]
		if !ok || needed[id] {
			return
		}
		needed[id] = true
		for _, n := range lab.Checks[i].Needs {
			visit(n)
		}
	}
	for _, id := range report {
		visit(id)
	}

	order, cyclic := topoOrder(lab, index, needed)
	results := make(map[string]*Outcome, len(needed))
	done := make(map[string]chan struct{}, len(needed))
	for id := range needed {
		done[id] = make(chan struct{})
	}
	for _, id := range cyclic {
		results[id] = &Outcome{ID: id, Kind: checkKind(lab.Checks[index[id]]), Status: StatusBlocked,
			Result: Result{Message: "its needs form a cycle (a bug in the lab)"}}
		close(done[id])
	}

	parallel := opt.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	sem := make(chan struct{}, parallel)
	var mu sync.Mutex
	var wg sync.WaitGroup
	grade := func(id string) {
		c := &lab.Checks[index[id]]
		// Needs come earlier in order, or are cyclic and already closed.
		var failing []string
		for _, n := range c.Needs {
			ch, ok := done[n]
			if !ok {
				failing = append(failing, n+" (no such check)")
				continue
			}
			<-ch
			mu.Lock()
			st := results[n].Status
			mu.Unlock()
			if st != StatusPass {
				failing = append(failing, n)
			}
		}
		var o Outcome
		if len(failing) > 0 {
			o = Outcome{ID: id, Kind: checkKind(*c), Status: StatusBlocked,
				Result: Result{Message: "waits for " + strings.Join(failing, ", ") + " to pass"}}
		} else {
			if !c.IsAnswer() && !opt.Sequential {
				sem <- struct{}{}
			}
			start := now()
			o = gradeOne(ctx, lab, c, t, answers, facts)
			o.Elapsed = now().Sub(start)
			if !c.IsAnswer() && !opt.Sequential {
				<-sem
			}
		}
		mu.Lock()
		results[id] = &o
		mu.Unlock()
		close(done[id])
	}
	for _, id := range order {
		if opt.Sequential {
			grade(id)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			grade(id)
		}()
	}
	wg.Wait()

	out := make([]Outcome, 0, len(report)+len(unknown))
	want := map[string]bool{}
	for _, id := range report {
		want[id] = true
	}
	for i := range lab.Checks {
		if id := lab.Checks[i].ID; want[id] {
			out = append(out, *results[id])
			delete(want, id) // a repeated id in only is reported once
		}
	}
	for _, id := range unknown {
		out = append(out, Outcome{ID: id, Status: StatusFail,
			Result: Result{Message: fmt.Sprintf("this lab has no check %q", id)}})
	}
	return out
}

func checkKind(c labs.Check) string {
	if c.IsAnswer() {
		return KindAnswer
	}
	return KindProbe
}

// topoOrder orders the needed checks so that every check comes after what
// it needs, keeping lab order otherwise; checks on a needs cycle (the
// loader rejects those, but a hand-built Lab might not) come back apart.
func topoOrder(lab *labs.Lab, index map[string]int, needed map[string]bool) (order, cyclic []string) {
	const (
		unseen = iota
		active
		finished
	)
	state := map[string]int{}
	onCycle := map[string]bool{}
	var stack []string
	var visit func(id string)
	visit = func(id string) {
		switch state[id] {
		case finished:
			return
		case active:
			// Everything on the stack from id's first appearance is a cycle.
			for i := len(stack) - 1; i >= 0; i-- {
				onCycle[stack[i]] = true
				if stack[i] == id {
					break
				}
			}
			return
		}
		state[id] = active
		stack = append(stack, id)
		for _, n := range lab.Checks[index[id]].Needs {
			if needed[n] {
				visit(n)
			}
		}
		stack = stack[:len(stack)-1]
		state[id] = finished
		if !onCycle[id] {
			order = append(order, id)
		}
	}
	for i := range lab.Checks {
		if id := lab.Checks[i].ID; needed[id] {
			visit(id)
		}
	}
	for i := range lab.Checks {
		if id := lab.Checks[i].ID; onCycle[id] {
			cyclic = append(cyclic, id)
		}
	}
	return order, cyclic
}

// gradeOne judges an answer or runs a probe (through its stable_for
// window). A lab bug (bad template, unknown kind) fails the check with a
// message saying so, rather than aborting the whole run.
func gradeOne(ctx context.Context, lab *labs.Lab, c *labs.Check, t Target, answers map[string]string, facts map[string]string) Outcome {
	o := Outcome{ID: c.ID, Kind: checkKind(*c)}
	if c.IsAnswer() {
		answer, ok := answers[c.ID]
		if !ok {
			o.Status, o.Message = StatusUnanswered, "not answered yet"
			return o
		}
		res, err := Judge(c.Answer, answer, facts)
		if err != nil {
			o.Status = StatusFail
			o.Result = Result{Seen: answer, Message: "cannot judge this answer (a bug in the lab): " + err.Error()}
			return o
		}
		o.Result = res
		o.Status = statusOf(res.Pass)
		return o
	}
	o.Result = runProbe(ctx, lab, c, t, facts)
	o.Status = statusOf(o.Pass)
	return o
}

func statusOf(pass bool) string {
	if pass {
		return StatusPass
	}
	return StatusFail
}

func runProbe(ctx context.Context, lab *labs.Lab, c *labs.Check, t Target, facts map[string]string) Result {
	if c.Probe == nil {
		return Result{Message: "check has neither an answer nor a probe (a bug in the lab)"}
	}
	prober, ok := Lookup(c.Probe.Kind)
	if !ok {
		return Result{Message: fmt.Sprintf("unknown probe kind %q", c.Probe.Kind)}
	}
	host := c.Probe.Host
	if host == "" && len(lab.Hosts) == 1 {
		host = lab.Hosts[0].Name
	}
	params := c.Probe.Params
	if params == nil {
		if k, ok := labs.LookupProbe(c.Probe.Kind); ok && k.NewParams != nil {
			params = k.NewParams()
		}
	}
	// Render a copy: the lab is shared by every run and must keep its
	// templates.
	params = labs.CloneParams(params)
	if params != nil {
		if err := labs.RenderParams(params, facts); err != nil {
			return Result{Message: "cannot render the probe's parameters (a bug in the lab): " + err.Error()}
		}
	}
	if c.StableFor == nil || c.StableFor.D() <= 0 {
		return prober.Probe(ctx, t, host, params)
	}
	return observeSteadily(ctx, prober, t, host, params, c.StableFor.D())
}

// stableInterval is how often a stable_for probe looks: ten looks per
// window, but not hammering the lab nor missing a flap by more than 1 s.
func stableInterval(window time.Duration) time.Duration {
	return min(max(window/10, 100*time.Millisecond), time.Second)
}

// observeSteadily passes only if every observation over window passes. It
// fails on the first failing observation, saying how long the state had
// held before it flipped, so a fix that flaps is caught as early as
// possible.
func observeSteadily(ctx context.Context, p Prober, t Target, host string, params any, window time.Duration) Result {
	interval := stableInterval(window)
	start := time.Now()
	looks := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		r := p.Probe(ctx, t, host, params)
		looks++
		held := time.Since(start)
		if !r.Pass {
			if looks > 1 {
				r.Message = fmt.Sprintf("held for %s, then flipped: %s", held.Round(time.Millisecond), r.Message)
			}
			r.Wanted = strings.TrimSpace(r.Wanted + fmt.Sprintf(" (steadily for %s)", window))
			return r
		}
		if held >= window {
			r.Message = fmt.Sprintf("%s (steady for %s, %d observations)", r.Message, window, looks)
			return r
		}
		timer.Reset(min(interval, window-held))
		select {
		case <-ctx.Done():
			return Result{Seen: r.Seen, Wanted: r.Wanted,
				Message: fmt.Sprintf("interrupted after %s of the %s stability window", held.Round(time.Millisecond), window)}
		case <-timer.C:
		}
	}
}
