package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/labctl/labctl/checks"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

func (a *app) addSessionCmds(root *cobra.Command) {
	root.AddCommand(a.answerCmd(), a.checkCmd(), a.hintCmd(), a.solveCmd(), a.reportCmd(), a.hashCmd(), a.testCmd())
}

// instanceAndRest splits an optional leading INSTANCE from the other
// args: the first arg names an instance when one is running under that
// name or id. For `answer`, two args are always CHECK VALUE.
func (a *app) instanceAndRest(args []string, answer bool) (*runner.Instance, []string, error) {
	if len(args) > 0 && !(answer && len(args) == 2) {
		if in, err := runner.Open(args[0]); err == nil {
			return in, args[1:], nil
		}
	}
	in, err := runner.Open("")
	if err != nil {
		return nil, nil, failErr(err)
	}
	return in, args, nil
}

func (a *app) answerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "answer [INSTANCE] [CHECK VALUE...]",
		Short: "Answer a question of the lab (without CHECK: list the open questions)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.environment(); err != nil {
				return err
			}
			in, rest, err := a.instanceAndRest(args, true)
			if err != nil {
				return err
			}
			if len(rest) == 0 {
				return a.listQuestions(in)
			}
			if len(rest) < 2 {
				return usageErr("answer: want CHECK VALUE (labctl answer lists the questions)")
			}
			check, value := rest[0], strings.Join(rest[1:], " ")
			if err := in.Answer(check, value); err != nil {
				if errors.Is(err, runner.ErrUnknownCheck) {
					return usageErr("%v", err)
				}
				return failErr(err)
			}
			fmt.Fprintf(a.stdout, "recorded your answer to %s; grade it with: labctl check %s\n", check, check)
			return nil
		},
	}
}

func (a *app) listQuestions(in *runner.Instance) error {
	answers, err := in.Answers()
	if err != nil {
		return failErr(err)
	}
	facts := in.Facts()
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	for _, c := range in.Lab.Checks {
		if !c.IsAnswer() {
			continue
		}
		q, err := labs.Render(c.Ask, facts)
		if err != nil {
			q = c.Ask
		}
		given := a.paint(ansiYel, "open")
		if ans, ok := answers[c.ID]; ok {
			given = "answered: " + ans.Value
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.bold(c.ID), q, given)
	}
	tw.Flush()
	fmt.Fprintln(a.stdout, "\nanswer with: labctl answer CHECK VALUE")
	return nil
}

// checkJSON is one outcome as `labctl check --json` prints it.
type checkJSON struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Title   string `json:"title,omitempty"`
	Seen    string `json:"seen,omitempty"`
	Wanted  string `json:"wanted,omitempty"`
	Diff    string `json:"diff,omitempty"`
	Message string `json:"message,omitempty"`
}

func (a *app) checkCmd() *cobra.Command {
	var asJSON, reveal bool
	cmd := &cobra.Command{
		Use:   "check [INSTANCE] [CHECK...]",
		Short: "Grade the lab: your answers and the lab's state (exit 0 only if all pass)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.environment(); err != nil {
				return err
			}
			in, only, err := a.instanceAndRest(args, false)
			if err != nil {
				return err
			}
			outcomes, err := in.Check(context.Background(), only)
			if err != nil {
				if errors.Is(err, runner.ErrUnknownCheck) {
					return usageErr("%v", err)
				}
				return failErr(err)
			}
			allPass := true
			for _, o := range outcomes {
				if o.Status != checks.StatusPass {
					allPass = false
				}
			}
			if asJSON {
				out := make([]checkJSON, 0, len(outcomes))
				for _, o := range outcomes {
					j := checkJSON{ID: o.ID, Kind: o.Kind, Status: o.Status, Title: a.checkTitle(in, o.ID), Seen: o.Seen, Message: o.Message, Diff: o.Diff}
					if reveal || o.Kind != "answer" {
						j.Wanted = o.Wanted
					}
					out = append(out, j)
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				a.printOutcomes(in, outcomes, reveal)
			}
			if !allPass {
				return silentExit(exitFail)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcomes as JSON")
	cmd.Flags().BoolVar(&reveal, "reveal", false, "show the expected answers (for trainers)")
	return cmd
}

func (a *app) checkTitle(in *runner.Instance, id string) string {
	c := in.Lab.CheckByID(id)
	if c == nil {
		return ""
	}
	text := c.Title
	if c.IsAnswer() {
		text = c.Ask
	}
	if r, err := labs.Render(text, in.Facts()); err == nil {
		return r
	}
	return text
}

func (a *app) printOutcomes(in *runner.Instance, outcomes []checks.Outcome, reveal bool) {
	passed := 0
	for _, o := range outcomes {
		mark := a.paint(ansiRed, "✗")
		switch o.Status {
		case checks.StatusPass:
			mark = a.paint(ansiGreen, "✓")
			passed++
		case checks.StatusBlocked:
			mark = a.paint(ansiDim, "…")
		case checks.StatusUnanswered:
			mark = a.paint(ansiYel, "?")
		}
		fmt.Fprintf(a.stdout, "%s %s  %s\n", mark, a.bold(o.ID), a.checkTitle(in, o.ID))
		detail := []string{}
		switch o.Status {
		case checks.StatusUnanswered:
			detail = append(detail, fmt.Sprintf("not answered yet: labctl answer %s VALUE", o.ID))
		case checks.StatusBlocked:
			detail = append(detail, "blocked: "+o.Message)
		case checks.StatusFail:
			if o.Message != "" {
				detail = append(detail, o.Message)
			}
			if o.Seen != "" {
				detail = append(detail, "seen: "+o.Seen)
			}
		}
		if (reveal || o.Kind != "answer") && o.Status != checks.StatusPass && o.Wanted != "" {
			detail = append(detail, "wanted: "+o.Wanted)
		}
		if o.Diff != "" && (reveal || o.Kind != "answer") {
			detail = append(detail, o.Diff)
		}
		for _, d := range detail {
			fmt.Fprintf(a.stdout, "    %s\n", strings.ReplaceAll(strings.TrimRight(d, "\n"), "\n", "\n    "))
		}
	}
	fmt.Fprintf(a.stdout, "\n%d of %d checks pass\n", passed, len(outcomes))
}

func (a *app) hintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hint [INSTANCE]",
		Short: "Show the next hint (hints open with time or while a check fails)",
		Args:  rangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := a.openInstance(firstOr(args, ""))
			if err != nil {
				return err
			}
			h, err := in.Hint(context.Background())
			var none *runner.NoHintError
			if errors.As(err, &none) {
				fmt.Fprintln(a.stdout, none.Error())
				return nil
			}
			if err != nil {
				return failErr(err)
			}
			fmt.Fprintf(a.stdout, "%s %s", a.paint(ansiYel, fmt.Sprintf("hint %d:", h.Index+1)), renderMarkdown(h.Text, a.color))
			if h.Left > 0 {
				fmt.Fprintf(a.stdout, "(%d more hint(s) may open later)\n", h.Left)
			}
			return nil
		},
	}
}

func (a *app) solveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "solve [INSTANCE]",
		Short: "Apply the lab's reference solution (answers and fix), recorded in the report",
		Args:  rangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := a.openInstance(firstOr(args, ""))
			if err != nil {
				return err
			}
			if err := in.Solve(context.Background(), a.stdout); err != nil {
				return failErr(err)
			}
			fmt.Fprintln(a.stdout, "applied the reference solution; see the result with: labctl check")
			return nil
		},
	}
}

func (a *app) reportCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "report [INSTANCE]",
		Short: "Summarise a session for a trainer: outcomes, attempts, hints, answers, time",
		Args:  rangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := a.openInstance(firstOr(args, ""))
			if err != nil {
				return err
			}
			r, err := in.Report()
			if err != nil {
				return failErr(err)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			a.printReport(r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func (a *app) printReport(r *runner.Report) {
	w := a.stdout
	state := "not solved"
	if r.Solved {
		state = "solved"
	}
	if r.UsedSolve {
		state += " (reference solution applied)"
	}
	fmt.Fprintf(w, "%s — lab %s — %s after %s, %d graded attempt(s), %d hint(s)\n\n", a.bold(r.Instance), r.Lab, state, r.Elapsed.Round(time.Second), r.Attempts, len(r.Hints))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tKIND\tLAST\tATTEMPTS\tFIRST PASS\tANSWERS")
	for _, c := range r.Checks {
		first := "-"
		if c.Passed {
			first = "after " + c.FirstPassAt.Round(time.Second).String()
		}
		var answers []string
		for _, ans := range c.Answers {
			v := ans.Value
			if ans.By != "" {
				v += " (" + ans.By + ")"
			}
			answers = append(answers, v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", c.ID, c.Kind, c.LastStatus, c.Attempts, first, strings.Join(answers, ", "))
	}
	tw.Flush()
	for _, h := range r.Hints {
		fmt.Fprintf(w, "hint %d shown after %s\n", h.Index+1, h.After.Round(time.Second))
	}
}

func (a *app) hashCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash VALUE",
		Short: "Hash a static expected answer (salted) for a lab file's `answer: {hash: ...}`",
		Args:  rangeArgs(1, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(a.stdout, labs.HashAnswer(strings.Join(args, " ")))
			return nil
		},
	}
}

func firstOr(args []string, def string) string {
	if len(args) > 0 {
		return args[0]
	}
	return def
}
