package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

func (a *app) addLifecycleCmds(root *cobra.Command) {
	root.AddCommand(a.upCmd(), a.shellCmd(), a.statusCmd(), a.downCmd(), a.gcCmd())
}

// environment returns exit code 3 with what to do when this machine cannot
// run labs.
func (a *app) environment() error {
	if err := runner.CheckEnvironment(); err != nil {
		var env *runner.EnvError
		if errors.As(err, &env) {
			fmt.Fprintf(a.stderr, "labctl: %s\n", env.Msg)
			if env.Hint != "" {
				fmt.Fprintf(a.stderr, "  what to do: %s\n", env.Hint)
			}
			return silentExit(exitEnviron)
		}
		return &exitError{code: exitEnviron, err: err}
	}
	return nil
}

// interruptible returns a context cancelled by SIGINT/SIGTERM, so `up`
// stops early and tears down what it made.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func (a *app) upCmd() *cobra.Command {
	var name string
	var seed int64
	cmd := &cobra.Command{
		Use:   "up LAB",
		Short: "Start a lab: create its hosts, apply its faults, print the briefing",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := labs.Resolve(args[0], a.labDirs)
			if err != nil {
				return a.labError(err)
			}
			if err := a.environment(); err != nil {
				return err
			}
			opt := runner.UpOptions{Name: name}
			if cmd.Flags().Changed("seed") {
				opt.Seed = &seed
			}
			progress := a.progress()
			opt.Progress = progress.update
			ctx, stop := interruptible()
			defer stop()
			in, err := runner.Up(ctx, l, opt)
			progress.done()
			if err != nil {
				return failErr(fmt.Errorf("up %s: %w", l.Name, err))
			}
			in.MarkUp()
			a.printBriefing(in)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "instance name (default: the lab's name, numbered if taken)")
	cmd.Flags().Int64Var(&seed, "seed", 0, "seed for the lab's random parameters (default: drawn and recorded)")
	return cmd
}

func (a *app) printBriefing(in *runner.Instance) {
	l := in.Lab
	w := a.stdout
	fmt.Fprintf(w, "%s %s — %s\n\n", a.paint(ansiGreen, "●"), a.bold(in.Name), l.Title)
	text, err := labs.Render(l.Briefing, in.Facts())
	if err != nil {
		text = l.Briefing
	}
	fmt.Fprint(w, renderMarkdown(text, a.color))
	ref := ""
	if in.Name != l.Name || a.countInstances() > 1 {
		ref = " " + in.Name
	}
	fmt.Fprintln(w)
	prog := progName()
	hosts := in.HostNames()
	if len(hosts) > 1 {
		fmt.Fprintf(w, "hosts: %s\n", strings.Join(hosts, ", "))
		fmt.Fprintf(w, "enter:  %s shell%s --host %s\n", prog, ref, hosts[0])
	} else {
		fmt.Fprintf(w, "enter:  %s shell%s\n", prog, ref)
	}
	fmt.Fprintf(w, "answer: %s answer%s CHECK VALUE   (%s answer%s lists the questions)\n", prog, ref, prog, ref)
	fmt.Fprintf(w, "grade:  %s check%s · stuck? %s hint%s · done: %s down%s\n", prog, ref, prog, ref, prog, ref)
}

// progName is labctl as the user typed it (bin/labctl from the README's
// make lab), so the commands the briefing suggests work when pasted.
func progName() string {
	if strings.Contains(os.Args[0], "/") && !filepath.IsAbs(os.Args[0]) {
		return strings.TrimPrefix(os.Args[0], "./")
	}
	return "labctl"
}

func (a *app) countInstances() int {
	list, err := runner.List()
	if err != nil {
		return 0
	}
	return len(list)
}

// progressLine shows one updating status line while `up` waits, on a
// terminal only.
type progressLine struct {
	a       *app
	enabled bool
	start   time.Time
	last    string
}

func (a *app) progress() *progressLine {
	return &progressLine{a: a, enabled: isTerminal(a.stderr), start: time.Now()}
}

func (p *progressLine) update(msg string) {
	if !p.enabled {
		return
	}
	p.last = msg
	fmt.Fprintf(p.a.stderr, "\r\x1b[K%s %s (%.1fs)", p.a.paint(ansiDim, "…"), msg, time.Since(p.start).Seconds())
}

func (p *progressLine) done() {
	if p.enabled && p.last != "" {
		fmt.Fprint(p.a.stderr, "\r\x1b[K")
	}
}

// openInstance finds an instance by id or name ("" = the only one).
func (a *app) openInstance(ref string) (*runner.Instance, error) {
	if err := a.environment(); err != nil {
		return nil, err
	}
	in, err := runner.Open(ref)
	if err != nil {
		return nil, failErr(err)
	}
	return in, nil
}

func (a *app) shellCmd() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "shell [INSTANCE] [--host H] [-- CMD...]",
		Short: "Enter a lab host: a shell in all of its namespaces, or run CMD there",
		RunE: func(cmd *cobra.Command, args []string) error {
			before, after := splitDash(cmd, args)
			if len(before) > 1 {
				return usageErr("shell: at most one INSTANCE before --, got %q", before)
			}
			ref := ""
			if len(before) == 1 {
				ref = before[0]
			}
			in, err := a.openInstance(ref)
			if err != nil {
				return err
			}
			if host == "" {
				host = in.HostNames()[0]
			}
			code, err := in.Shell(context.Background(), host, after, a.stdin, a.stdout, a.stderr)
			if err != nil {
				return failErr(err)
			}
			if code != 0 {
				return silentExit(code)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the host to enter (default: the lab's first host)")
	return cmd
}

// splitDash separates positional args from the command after "--".
func splitDash(cmd *cobra.Command, args []string) (before, after []string) {
	if i := cmd.ArgsLenAtDash(); i >= 0 {
		return args[:i], args[i:]
	}
	return args, nil
}

type statusEntry struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Lab     string    `json:"lab"`
	Phase   string    `json:"phase"`
	Created time.Time `json:"created"`
	Seed    int64     `json:"seed"`
	Hosts   []string  `json:"hosts"`
}

func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List running lab instances",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.environment(); err != nil {
				return err
			}
			list, err := runner.List()
			if err != nil {
				return failErr(err)
			}
			entries := make([]statusEntry, 0, len(list))
			for _, in := range list {
				entries = append(entries, statusEntry{ID: in.ID, Name: in.Name, Lab: in.LabName, Phase: in.Phase, Created: in.Created, Seed: in.Seed, Hosts: in.HostNames()})
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
			}
			if len(entries) == 0 {
				fmt.Fprintln(a.stdout, "no lab is running (start one with: labctl up LAB)")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tLAB\tPHASE\tUP FOR\tHOSTS")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Name, e.Lab, e.Phase, time.Since(e.Created).Round(time.Second), strings.Join(e.Hosts, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func (a *app) downCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "down [INSTANCE|--all]",
		Short: "Remove a lab instance and everything it created",
		Args:  rangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.environment(); err != nil {
				return err
			}
			var targets []*runner.Instance
			if all {
				if len(args) > 0 {
					return usageErr("down: give an INSTANCE or --all, not both")
				}
				list, err := runner.List()
				if err != nil {
					return failErr(err)
				}
				targets = list
			} else {
				ref := ""
				if len(args) == 1 {
					ref = args[0]
				}
				in, err := runner.Open(ref)
				if err != nil {
					return failErr(err)
				}
				targets = []*runner.Instance{in}
			}
			var errs []error
			for _, in := range targets {
				if err := in.Down(context.Background()); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", in.Name, err))
					continue
				}
				fmt.Fprintf(a.stdout, "%s is down\n", in.Name)
			}
			if len(errs) > 0 {
				return failErr(errors.Join(errs...))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "remove every running instance")
	return cmd
}

func (a *app) gcCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove what crashed or abandoned instances left behind",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.environment(); err != nil {
				return err
			}
			rep, err := runner.GC(context.Background())
			if err != nil {
				return failErr(err)
			}
			if len(rep.Instances)+len(rep.Swept)+len(rep.Errors) == 0 {
				fmt.Fprintln(a.stdout, "nothing to clean up")
				return nil
			}
			for _, id := range rep.Instances {
				fmt.Fprintf(a.stdout, "removed dead instance %s\n", id)
			}
			for _, r := range rep.Swept {
				fmt.Fprintf(a.stdout, "removed leftover %s\n", r)
			}
			for _, e := range rep.Errors {
				fmt.Fprintf(a.stderr, "could not remove: %s\n", e)
			}
			if len(rep.Errors) > 0 {
				return silentExit(exitFail)
			}
			return nil
		},
	}
}
